"""The ``mil-assert`` command: judge models; re-render and merge saved reports; benchmark.

    mil-assert check MODEL [MODEL ...] [--tests T,...] [--seeds S] [--device D] [--dim D]
                     [--report PATH.json] [--jobs N | --executor ray [--address A]]
                     [--max-seconds T] [--quiet]
    mil-assert dims [MODEL ...] [--dims 8,16,32,64,256,1024] [--seeds S] [--confirm-seeds S]
                    [--tests T,...] [--device D] [--report PATH.json]
                    [--jobs N | --executor ray [--address A]] [--max-seconds T] [--quiet]
    mil-assert render REPORT.json --format md|tex|csv|png|method|bib|all [--validation] [-o OUT]
    mil-assert merge A.json B.json [...] -o MERGED.json
    mil-assert benchmark [--model abmil | --one-bag] [--test single_concept] [--seeds 8]
                         [--repeats 3]

``check`` trains and judges, as pytest does; ``dims`` does so at several instance
dimensions (:mod:`mil_assert.dimensions`); ``render`` and ``merge`` never retrain, and
``benchmark`` only times training. Exit status: 0 success (for ``check``: every cell
passes, is inconclusive, or matches its declaration), 1 ``check``'s gate failed (6 when a
model learned nothing), 2 bad
input (one-line message); interrupted, 128 + the signal's number: 130 Ctrl-C (SIGINT),
143 SIGTERM, 129 SIGHUP (``check`` and ``dims`` stop their workers and still write the
finished cells' report, marked interrupted).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import mil_assert
from mil_assert.benchmark import (
    benchmark,
    benchmark_one_bag,
    format_table,
    torchmil_available,
)
from mil_assert.defaults import (
    BENCHMARK_REPEATS,
    BENCHMARK_SEEDS,
    BENCHMARK_SLOW_EPOCHS,
    BENCHMARK_SLOW_SEEDS,
    BUDGETS,
    DEFAULT_SEEDS,
    INSTANCE_DIM,
    MIN_SEEDS,
    Budget,
    seed_list,
)
from mil_assert.devices import describe_device, resolve_device
from mil_assert.dimensions import (
    CONFIRM_SEEDS,
    DIMS,
    check_dims,
    format_sweep,
    load_dimensions,
    sweep,
    sweep_passed,
)
from mil_assert.dimensions import SCHEMA as DIMS_SCHEMA
from mil_assert.figure import plot_report
from mil_assert.files import check_writable, write_json_atomic, write_text_atomic
from mil_assert.interrupts import (
    exit_status,
    last_stop_signal,
    signal_name,
    signal_of,
    signals_interrupt,
)
from mil_assert.loading import ModelSpecError, resolve_models
from mil_assert.render import TEXT_FORMATS, render
from mil_assert.report import (
    ReportError,
    contract_lines,
    load_report,
    merge_reports,
    read_json,
    training_lines,
)
from mil_assert.results import LEARNED_NOTHING_STATUS
from mil_assert.sweep import SCHEMA as SWEEP_SCHEMA
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.regime import INSTANCES

CHECK_EPILOG = f"""\
model options, after the model's name:
  @input=bag1       forward(x [1, N, D]) takes one bag per call, no mask (bag: x [N, D])
  @output=probability  forward returns probabilities, not logits
  @output_key=K     the bag scores are item K of a returned tuple or dict
  @positive_class=C  the positive class of [B, C] class scores
  @dim_arg=NAME     the factory's keyword for the instance dimension (default: first argument)
  e.g. mil-assert check "models/attention.py:Attention@input=bag1@output=probability"

the same cells under pytest:
  pytest --pyargs mil_assert.compliance --mil-model=MODEL,...

exit statuses:
  0 the gate passed    1 a cell failed the gate    {LEARNED_NOTHING_STATUS} a model learned nothing
  2 bad input, before any training    130 / 143 / 129 interrupted by Ctrl-C / SIGTERM /
  SIGHUP (the report keeps the finished cells)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mil-assert",
        description="Judge MIL models on the algorithmic unit tests (check), re-render or "
                    "merge saved reports, or time the harness.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mil_assert.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="train and judge models on the algorithmic unit tests (the same cells "
                      "as pytest); exit 0 when the gate passes, 1 when it fails",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("models", nargs="+", metavar="MODEL",
                       help="a built-in name, pkg.module:factory, path/to/file.py:factory or "
                            "path/to/file.py:SPEC (a ModelSpec), each optionally followed by "
                            "@input=bag|bag1, @output=logit|probability, @output_key=K, "
                            "@positive_class=C, @dim_arg=NAME (see below)")
    add_run_options(check, f"seeds per cell, seeds 0..S-1, at least {MIN_SEEDS} (default "
                                f"{DEFAULT_SEEDS})",
                    "write the JSON report (also of the finished cells if interrupted)")
    check.add_argument("--dim", type=int, default=INSTANCE_DIM, metavar="D",
                       help=f"instance dimension of the synthetic bags (default {INSTANCE_DIM})")

    dims = commands.add_parser(
        "dims", help="the verdicts at several instance dimensions, with more seeds for "
                     "positive controls and for cells that are fragile or near a threshold; "
                     "exit 0 when every positive control holds and no cell is an error")
    dims.add_argument("models", nargs="*", metavar="MODEL",
                      help="as for check (default: every built-in model)")
    dims.add_argument("--dims", default=",".join(map(str, DIMS)), metavar="D,...",
                      help=f"instance dimensions (default {','.join(map(str, DIMS))})")
    add_run_options(dims, f"seeds of the screening run of every cell (default {DEFAULT_SEEDS})",
                    "write the result (after every dimension)")
    dims.add_argument("--confirm-seeds", type=int, default=CONFIRM_SEEDS, metavar="S",
                      help=f"seeds of positive controls and of cells fragile or near a "
                           f"threshold (default {CONFIRM_SEEDS})")

    regimes = commands.add_parser(
        "sweep", help="the verdicts at several bag sizes, instance kinds, data folders, "
                      "dimensions and budgets, one axis at a time, in one JSON; exit 0 when "
                      "every point's gate passes")
    regimes.add_argument("models", nargs="+", metavar="MODEL", help="as for check")
    add_run_options(regimes, f"seeds per cell, at least {MIN_SEEDS} (default {DEFAULT_SEEDS})",
                    "write the sweep (after every point)", regime=False)
    regimes.add_argument("--bag-sizes", default="default", metavar="N,...",
                         help="bag sizes; default is the tests' own (~13) (default: default)")
    regimes.add_argument("--instances", default="gaussian", metavar="KIND,...",
                         help=f"instance kinds among {', '.join(INSTANCES)} (default gaussian)")
    regimes.add_argument("--data", default="", metavar="FOLDER,...",
                         help="folders of your own bags, each judged on single_concept")
    regimes.add_argument("--dims", default=str(INSTANCE_DIM), metavar="D,...",
                         help=f"instance dimensions of the synthetic bags; the first is "
                              f"every regime's (default {INSTANCE_DIM})")
    regimes.add_argument("--budgets", default="default", metavar="NAME,...",
                         help=f"budgets among {', '.join(BUDGETS)}, each regime judged under "
                              f"each (default: default)")

    show = commands.add_parser(
        "render", help="a report's matrix as Markdown, LaTeX (booktabs) or CSV, its figure "
                       "(PNG), a methods paragraph or BibTeX; or all of them")
    show.add_argument("report", help="a JSON report (pytest --mil-report=PATH.json)")
    show.add_argument("--format", choices=(*TEXT_FORMATS, "png", "all"), default="md",
                      help="md, tex, csv, method (paragraph), bib: text to standard output "
                           "or -o; png: a figure (-o, default beside the report); all: "
                           "every format into the folder -o (default the report's folder)")
    show.add_argument("--validation", action="store_true",
                      help="LaTeX: add the validation AUC in parentheses")
    show.add_argument("-o", "--output", help="output file (a folder for --format all)")

    merge = commands.add_parser("merge", help="combine reports of different models or "
                                              "tests, run with the same budget and data")
    merge.add_argument("reports", nargs="+", help="two or more JSON reports")
    merge.add_argument("-o", "--output", required=True, help="the merged JSON report")
    merge.add_argument("--replace", action="store_true",
                       help="a later report's cell replaces an earlier one's of the same "
                            "model and test (a model measured again)")

    rejudge = commands.add_parser(
        "rejudge", help="judge a saved report's trained AUCs again by this version's verdict "
                        "rule, without training; the earlier rule is kept in the report")
    rejudge.add_argument("report", help="a JSON report")
    rejudge.add_argument("-o", "--output", required=True, help="the rejudged JSON report")

    compare = commands.add_parser(
        "compare", help="two reports of the same cells side by side (a GPU run against the "
                        "CPU reference): verdicts, AUC changes and speed-up; exit 1 when a "
                        "verdict on the same seeds differs")
    compare.add_argument("reference", help="the reference JSON report (e.g. the CPU run)")
    compare.add_argument("new", help="the JSON report to compare with it")

    bags = commands.add_parser(
        "bags-from-csv", help="turn a CSV of instances (label,bag,features...; the classic MIL "
                              "benchmarks' layout) into a folder for --data")
    bags.add_argument("csv", help="the CSV file, one instance per row")
    bags.add_argument("folder", help="the folder to write: BAG.pt files and labels.csv")
    bags.add_argument("--standardize", action="store_true",
                      help="z-score each feature over all instances")

    bench = commands.add_parser(
        "benchmark", help="time the harness against a plain padded loop, a batch-size-1 "
                          "loop and torchmil's Trainer (if installed), side by side")
    bench.add_argument("--model", default="abmil",
                       help="a built-in name, pkg.module:factory or path.py:factory")
    bench.add_argument("--test", default="single_concept", choices=sorted(TESTS))
    bench.add_argument("--seeds", type=positive, default=BENCHMARK_SEEDS,
                       help=f"seeds 0..S-1 (default {BENCHMARK_SEEDS})")
    bench.add_argument("--repeats", type=positive, default=BENCHMARK_REPEATS,
                       help=f"timed runs of each way; the median is reported (default "
                            f"{BENCHMARK_REPEATS})")
    bench.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    bench.add_argument("--slow-seeds", type=positive, default=BENCHMARK_SLOW_SEEDS,
                       help=f"seeds the slow loops (c, d) really train (default "
                            f"{BENCHMARK_SLOW_SEEDS})")
    bench.add_argument("--slow-epochs", type=positive, default=BENCHMARK_SLOW_EPOCHS,
                       help=f"epochs the slow loops (c, d; --one-bag: c) really train "
                            f"(default {BENCHMARK_SLOW_EPOCHS})")
    bench.add_argument("--one-bag", action="store_true",
                       help="instead: time attention MIL with dropout written for one bag per "
                            "call (vmap, and bag by bag) against its batched twin")
    return parser


def add_run_options(command: argparse.ArgumentParser, seeds_help: str,
                    report_help: str, regime: bool = True) -> None:
    """The options ``check``, ``dims`` and ``sweep`` share: tests, seeds, device, report,
    jobs, executor, time limit, quiet; with ``regime``, one bag size, instance kind, data
    folder and budget (``sweep`` takes lists of them instead)."""
    command.add_argument("--tests", default=None, metavar="T,...",
                         help=f"comma-separated tests (default all: {', '.join(TESTS)})")
    command.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="S",
                         help=seeds_help)
    command.add_argument("--device", default="auto",
                         help="auto (default: cuda when available), cpu, cuda or cuda:N; with "
                              "--jobs, cuda puts each worker on its own GPU, round robin")
    command.add_argument("--report", default=None, metavar="PATH.json", help=report_help)
    command.add_argument("--jobs", type=positive, default=1, metavar="N",
                         help="cells in N worker processes; results equal --jobs 1 (default 1)")
    command.add_argument("--executor", choices=("processes", "ray"), default="processes",
                         help="processes (default: this machine, --jobs) or ray: one Ray task "
                              "per cell on a Ray cluster, same results (pip install "
                              "\"mil-assert[ray]\")")
    command.add_argument("--address", default=None, metavar="A",
                         help="with --executor ray: the cluster, auto (started with `ray "
                              "start` here), HOST:PORT or ray://HOST:PORT (default "
                              "$RAY_ADDRESS, else a new local Ray instance)")
    command.add_argument("--max-seconds", type=positive_seconds, default=None, metavar="T",
                         help="a time limit of T seconds per seed, one clock for the cell "
                              "(T x seeds, twice that for label_swap); past it the cell is "
                              "error, keeping the seeds trained one by one that finished "
                              "(default: none)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    if not regime:
        return
    command.add_argument("--budget", choices=tuple(BUDGETS), default="default",
                         help="the training budget: default (60 epochs, batches of 32, Adam "
                              "lr 3e-3) or wsi (one bag per step, AdamW lr 2e-4, weight decay "
                              "1e-5, 25 epochs: as slide models are trained)")
    command.add_argument("--bag-size", type=positive, default=None, metavar="N",
                         help="about N instances per bag, the witnesses unchanged, so the "
                              "witness rate falls as N grows (default: each test's own, ~13)")
    command.add_argument("--instances", choices=INSTANCES, default="gaussian",
                         help="gaussian (default) or digits: every instance an 8x8 digit "
                              "image (pip install \"mil-assert[digits]\")")
    command.add_argument("--data", default=None, metavar="FOLDER",
                         help="your own bags: FOLDER/BAG.pt (a float tensor [N, D] each) and "
                              "FOLDER/labels.csv (bag,label), judged on the single_concept "
                              "poison test")


def where_cells_run(args: argparse.Namespace) -> str:
    """The header's last item: the worker processes, or the Ray cluster."""
    if args.executor == "ray":
        from mil_assert.ray_executor import describe_cluster

        return describe_cluster()
    return f"{args.jobs} job(s)"


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def benchmark_command(args: argparse.Namespace) -> None:
    if args.one_bag:
        return one_bag_benchmark_command(args)
    specs = resolve_models(args.model, Path.cwd())
    if len(specs) != 1:
        raise ModelSpecError(f"benchmark times one model; --model={args.model!r} selects "
                             f"{len(specs)}")
    [spec] = specs
    device = resolve_device(args.device)
    budget = Budget().with_overrides(spec.budget)
    print(f"mil-assert benchmark: {spec.name} on {args.test}, {args.seeds} seeds, "
          f"{budget.n_train_bags} training bags x {budget.epochs} epochs, batch "
          f"{budget.batch_size}, D = {INSTANCE_DIM}; median of {args.repeats} repeats")
    print(f"device: {describe_device(device)}; {date.today().isoformat()}")
    if not torchmil_available():
        print("(d) torchmil Trainer: skipped, torchmil is not installed "
              "(pip install torchmil to add it)")
    timings = benchmark(spec, TESTS[args.test], args.seeds, Budget(), INSTANCE_DIM, device,
                        args.repeats, args.slow_seeds, args.slow_epochs)
    print(format_table(timings))


def one_bag_benchmark_command(args: argparse.Namespace) -> None:
    device, budget = resolve_device(args.device), Budget()
    print(f"mil-assert benchmark --one-bag: attention MIL with dropout on {args.test}, "
          f"{args.seeds} seeds, {budget.n_train_bags} training bags x {budget.epochs} "
          f"epochs, batch {budget.batch_size}, D = {INSTANCE_DIM}; median of {args.repeats} "
          f"repeats")
    print(f"device: {describe_device(device)}; {date.today().isoformat()}")
    timings = benchmark_one_bag(TESTS[args.test], args.seeds, budget, INSTANCE_DIM, device,
                                args.repeats, args.slow_epochs)
    print(format_table(timings))
    batched, vmap, loop = (t.median for t in timings)
    print(f"one bag per call: {vmap / batched:.1f}x its batched twin with vmap; bag by bag "
          f"{loop / batched:.1f}x, so vmap runs it {loop / vmap:.1f}x faster")


ALL_FILES = {"md": ".md", "tex": ".tex", "csv": ".csv", "method": "-method.txt",
             "bib": ".bib", "png": ".png"}


def check_command(args: argparse.Namespace) -> int:
    from mil_assert.api import prepare, report_of
    from mil_assert.runner import run_cells

    models, tests, run = prepare(args.models, args.tests, args.seeds, args.device, dim=args.dim,
                                 executor=args.executor, address=args.address,
                                 max_seconds=args.max_seconds, bag_size=args.bag_size,
                                 instances=args.instances, data=args.data, budget=args.budget)
    if args.report is not None:
        check_writable(args.report)
    print(f"mil-assert check: {', '.join(m.spec.name for m in models)} on {', '.join(tests)}; "
          f"{len(run.seeds)} seeds per cell; device {run.device}; "
          f"D = {run.regime.instance_dim(run.dim)}; {run.regime.describe()}; "
          f"budget {run.budget.name}; "
          f"{where_cells_run(args)}", flush=True)
    outcome = run_cells(models, tests, run, jobs=args.jobs, progress=not args.quiet,
                        executor=args.executor, address=args.address)
    report = report_of(outcome, [m.spec.name for m in models], run, tests)
    if report.results:
        print("\n".join([report.matrix, *contract_lines(report.results),
                         *training_lines(report.results)]))
    for line in report.failures:
        print(f"FAILED {line}")
    if args.report is not None and (report.results or report.interrupted):
        print(f"report written to {report.save(args.report)}")
    if report.interrupted:
        print(f"mil-assert: interrupted after {len(report.results)} of {report.cells} cells "
              f"({report.stopped_by})", file=sys.stderr)
        return exit_status(outcome.signal or signal.SIGINT)
    failures = len(report.failures)
    print(f"gate: {'passed' if report.passed else 'failed'} ({len(report.results)} cell(s), "
          f"{failures} failure(s))")
    if report.untrained:
        return LEARNED_NOTHING_STATUS
    return 0 if report.passed else 1


def dims_command(args: argparse.Namespace) -> int:
    from mil_assert.api import prepare
    from mil_assert.registry import default_models

    dims = check_dims(args.dims.split(","))
    models, tests, run = prepare(args.models or default_models(), args.tests,
                                 args.seeds, args.device, executor=args.executor,
                                 address=args.address, max_seconds=args.max_seconds,
                                 bag_size=args.bag_size, instances=args.instances,
                                 data=args.data, budget=args.budget)
    seed_list(args.confirm_seeds)
    if args.report is not None:
        check_writable(args.report)
    print(f"mil-assert dims: {', '.join(m.spec.name for m in models)} on {', '.join(tests)}; "
          f"D = {', '.join(map(str, dims))}; {len(run.seeds)} seeds, {args.confirm_seeds} "
          f"for positive controls and cells fragile or near a threshold; device "
          f"{run.device}; {where_cells_run(args)}", flush=True)
    with signals_interrupt():
        data = sweep(models, tests, run, dims=dims, confirm_seeds=args.confirm_seeds,
                     jobs=args.jobs, progress=not args.quiet, report=args.report,
                     executor=args.executor, address=args.address)
    print(format_sweep(data), end="")
    if args.report is not None:
        print(f"result written to {args.report}")
    if data["interrupted"]:
        return interrupted_status()
    return 0 if sweep_passed(data) else 1


def sweep_command(args: argparse.Namespace) -> int:
    from mil_assert.api import prepare
    from mil_assert.sweep import cells_at, gate_failures, sweep_points, sweep_table
    from mil_assert.sweep import sweep as regime_sweep

    points = sweep_points(
        check_dims(args.dims.split(",")),
        [None if size.strip() == "default" else positive_size(size)
         for size in args.bag_sizes.split(",")],
        choices_of(args.instances, INSTANCES, "--instances"),
        [str(Path(folder).expanduser().resolve()) for folder in args.data.split(",")
         if folder.strip()],
        choices_of(args.budgets, tuple(BUDGETS), "--budgets"))
    models, tests, run = prepare(args.models, args.tests, args.seeds, args.device,
                                 executor=args.executor, address=args.address,
                                 max_seconds=args.max_seconds)
    for point in points:  # every data folder and option is checked before any training
        applicable = cells_at(point, tests)
        if not applicable:
            raise ValueError(f"{point.label}: none of the tests {', '.join(tests)} can be "
                             f"built there; add single_concept to --tests")
        point.regime.instance_dim(point.dim)
    if args.report is not None:
        check_writable(args.report)
    print(f"mil-assert sweep: {', '.join(m.spec.name for m in models)} on "
          f"{', '.join(tests)}; {len(points)} points; {len(run.seeds)} seeds per cell; "
          f"device {run.device}; {where_cells_run(args)}", flush=True)
    with signals_interrupt():
        data = regime_sweep(models, tests, run, points, jobs=args.jobs,
                            progress=not args.quiet, report=args.report,
                            executor=args.executor, address=args.address)
    print(sweep_table(data))
    failures = gate_failures(data)
    for line in failures:
        print(f"FAILED {line}")
    if args.report is not None:
        print(f"sweep written to {args.report}")
    if data["interrupted"]:
        return interrupted_status()
    return 1 if failures else 0


def interrupted_status() -> int:
    """Say which signal stopped a sweep and return its exit status (130, 143, 129)."""
    stopped_by = last_stop_signal() or signal.SIGINT
    print(f"mil-assert: interrupted ({signal_name(stopped_by)})", file=sys.stderr)
    return exit_status(stopped_by)


def positive_size(text: str) -> int:
    try:
        return positive(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"--bag-sizes: {text.strip()!r} is not a positive number of "
                         f"instances or 'default'") from None


def choices_of(text: str, choices: Sequence[str], option: str) -> list[str]:
    """The comma-separated names of ``option``, each one of ``choices``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in choices]
    if unknown or not names:
        raise ValueError(f"{option}: {', '.join(unknown) or 'nothing given'}: use "
                         f"{', '.join(choices)}")
    return names


def render_command(args: argparse.Namespace) -> None:
    data = read_json(args.report)
    if isinstance(data, dict) and data.get("schema") == DIMS_SCHEMA:
        if args.format != "md":
            raise ReportError(f"{args.report} is a dimension sweep; render it with --format md")
        text = format_sweep(load_dimensions(args.report, data))
        if args.output:
            write_text_atomic(text, args.output)
        else:
            sys.stdout.write(text)
        return
    if isinstance(data, dict) and data.get("schema") == SWEEP_SCHEMA:
        if args.format != "md":
            raise ReportError(f"{args.report} is a sweep over regimes; render it with "
                              f"--format md, or render one point's report")
        from mil_assert.sweep import sweep_table

        text = sweep_table(data) + "\n"
        if args.output:
            write_text_atomic(text, args.output)
        else:
            sys.stdout.write(text)
        return
    report = load_report(args.report)
    source = Path(args.report)
    if args.format == "all":
        folder = Path(args.output) if args.output else source.parent
        for fmt, suffix in ALL_FILES.items():
            target = folder / f"{source.stem}{suffix}"
            if fmt == "png":
                plot_report(report, target)
            else:
                write_text_atomic(render(report, fmt, args.validation), target)
            print(f"wrote {target}")
    elif args.format == "png":
        target = plot_report(report, args.output or source.with_suffix(".png"))
        print(f"wrote {target}")
    else:
        text = render(report, args.format, args.validation)
        if args.output:
            write_text_atomic(text, args.output)
        else:
            sys.stdout.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return check_command(args)
        if args.command == "dims":
            return dims_command(args)
        if args.command == "sweep":
            return sweep_command(args)
        if args.command == "render":
            render_command(args)
        elif args.command == "benchmark":
            benchmark_command(args)
        elif args.command == "bags-from-csv":
            from mil_assert.synthetic.own_data import bags_from_csv

            count = bags_from_csv(args.csv, args.folder, args.standardize)
            print(f"{count} bags written to {args.folder} (use --data {args.folder})")
        elif args.command == "compare":
            from mil_assert.compare import compare_reports, comparison_lines

            comparison = compare_reports(load_report(args.reference), load_report(args.new))
            print("\n".join(comparison_lines(comparison)))
            return 1 if comparison.disagreements else 0
        elif args.command == "rejudge":
            from mil_assert.rejudge import rejudge_report

            rejudged = rejudge_report(load_report(args.report))
            write_json_atomic(rejudged, args.output)
            changes = rejudged["rejudged"]["changed"]
            for change in changes:
                print(f"{change['model']} / {change['test']}: {change['from']} -> "
                      f"{change['to']}")
            print(f"{len(changes)} verdict(s) changed; written to {args.output}")
        else:
            merged = merge_reports([(path, load_report(path)) for path in args.reports],
                                   replace=args.replace)
            write_json_atomic(merged, args.output)
            print(f"merged {len(args.reports)} reports ({len(merged['results'])} cells) "
                  f"into {args.output}")
    except (ReportError, ModelSpecError, OSError, ValueError) as error:
        print(f"mil-assert: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"mil-assert: interrupted ({signal_name(signal_of(interrupt))})", file=sys.stderr)
        return exit_status(signal_of(interrupt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
