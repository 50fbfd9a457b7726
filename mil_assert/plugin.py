"""The pytest plugin: options, the ``mil_result`` fixture, the matrix and the report.

Installed with mil-assert (entry point ``pytest11``), so it is loaded in every pytest
session of the environment; it stays inert (no torch import, no header, no matrix, no
change of torch's thread count) in a session that selects no compliance test.

Options (``pytest --help``, group "mil-assert"; defaults in :mod:`mil_assert.defaults`):
    --mil-model=NAMES    built-in names, ``pkg.module:factory`` or ``file.py:factory``;
                         also ``--model`` where no other plugin or conftest defines it
    --mil-seeds=S        seeds per cell (at least ``MIN_SEEDS``)
    --mil-device=D       auto | cpu | cuda (auto = cuda when available)
    --mil-dim=D          instance dimension of the synthetic bags
    --mil-bag-size=N     about N instances per bag (:mod:`mil_assert.synthetic.regime`)
    --mil-instances=I    gaussian | digits
    --mil-data=FOLDER    your own bags, on the single_concept poison test
    --mil-report=PATH    write the matrix as JSON (schema mil-assert/report/v1)
    --mil-max-seconds=T  a time limit per seed of training (default: none)
    --mil-budget=NAME    default | wsi (:data:`mil_assert.defaults.BUDGETS`)

Compliance tests are the functions of :mod:`mil_assert.compliance` (run them anywhere
with ``pytest --pyargs mil_assert.compliance --mil-model=...``), and any test decorated
with :func:`mil_assert.parametrize_with_checks`. A model option makes the session a
compliance run: other collected tests are deselected.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mil_assert.checks import MODEL_ARG, TEST_ARG, cell_marks
from mil_assert.defaults import (
    BUDGETS,
    DEFAULT_SEEDS,
    INSTANCE_DIM,
    MIN_SEEDS,
    named_budget,
    seed_list,
)
from mil_assert.session import DEFAULT_REGIME_OPTIONS, STATE, Suite, settings

if TYPE_CHECKING:

    from mil_assert.registry import ModelSpec
    from mil_assert.results import CellResult

RESULT_PROPERTY = "mil_result"
SHORT_MODEL_OPTION = "--model"
RUN_ANYWHERE = "pytest --pyargs mil_assert.compliance --mil-model=..."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mil-assert", "MIL assumption compliance (mil-assert)")
    group.addoption("--mil-model", dest="mil_model", default=None, metavar="NAMES",
                    help="comma-separated models to judge: built-in names, pkg.module:factory, "
                         "path/to/file.py:factory or file.py:SPEC, each optionally with "
                         "@input=bag1, @output=probability, @output_key=K, @positive_class=C "
                         "(mil-assert check --help lists them); outside this repository: "
                         "pytest --pyargs mil_assert.compliance (default: every built-in "
                         "model in the "
                         "default run, see ModelSpec.in_default_run); makes the run a "
                         "compliance run (other tests are deselected)")
    group.addoption("--mil-seeds", dest="mil_seeds", type=int, default=DEFAULT_SEEDS,
                    metavar="S", help=f"seeds per (model, test) cell, seeds 0..S-1, at least "
                                      f"{MIN_SEEDS} (default {DEFAULT_SEEDS})")
    group.addoption("--mil-device", dest="mil_device", default="auto",
                    choices=("auto", "cpu", "cuda"),
                    help="where to train: auto (cuda when available), cpu or cuda; with "
                         "xdist each worker takes its own GPU, round robin")
    group.addoption("--mil-dim", dest="mil_dim", type=int, default=INSTANCE_DIM, metavar="D",
                    help=f"instance dimension D of the synthetic bags (default {INSTANCE_DIM})")
    group.addoption("--mil-report", dest="mil_report", default=None, metavar="PATH.json",
                    help="write the compliance matrix as JSON to this path")
    group.addoption("--mil-bag-size", dest="mil_bag_size", type=int, default=None,
                    metavar="N", help="about N instances per bag, the witnesses unchanged, so "
                                      "the witness rate falls as N grows (default: each "
                                      "test's own, ~13)")
    group.addoption("--mil-instances", dest="mil_instances", default="gaussian",
                    choices=("gaussian", "digits"),
                    help="gaussian (default) or digits: every instance an 8x8 digit image "
                         "(pip install \"mil-assert[digits]\")")
    group.addoption("--mil-data", dest="mil_data", default=None, metavar="FOLDER",
                    help="your own bags: FOLDER/BAG.pt (a float tensor [N, D] each) and "
                         "FOLDER/labels.csv (bag,label), judged on the single_concept "
                         "poison test (the other tests are skipped)")
    group.addoption("--mil-max-seconds", dest="mil_max_seconds", type=float, default=None,
                    metavar="T", help="a time limit of T seconds per seed, one clock for the "
                                      "cell (T x seeds, twice that for label_swap); past it "
                                      "the cell is error (default: none)")
    group.addoption("--mil-budget", dest="mil_budget", default="default",
                    choices=tuple(BUDGETS), metavar="NAME",
                    help="the training budget: default (60 epochs, batches of 32, Adam lr "
                         "3e-3) or wsi (one bag per step, AdamW lr 2e-4, weight decay 1e-5, "
                         "25 epochs)")


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]):
    """After the root conftests and every plugin have added their options, add the short
    ``--model`` as an alias of ``--mil-model``, unless one of them already defines it
    (many ML repositories do, and two definitions would stop pytest at start-up)."""
    result = yield
    if SHORT_MODEL_OPTION not in option_strings(parser):
        parser.getgroup("mil-assert").addoption(
            SHORT_MODEL_OPTION, dest="mil_model", default=None, metavar="NAMES",
            help="short for --mil-model (added because no plugin or conftest defines --model)")
    return result


def option_strings(parser: pytest.Parser) -> set[str]:
    """Every option string registered so far (``--x``), by any plugin or conftest."""
    groups = [getattr(parser, "_anonymous", None), *getattr(parser, "_groups", ())]
    names = {name for group in groups if group is not None for option in group.options
             for name in option.names()}
    optparser = getattr(parser, "optparser", None)  # pytest >= 9 builds argparse eagerly
    names.update(getattr(optparser, "_option_string_actions", {}))
    return names




def worker_index(config: pytest.Config) -> int | None:
    """The xdist worker's number (``gw3`` -> 3), or ``None`` outside a worker."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    match = re.search(r"\d+", str(workerinput.get("workerid", "")))
    return int(match.group()) if match else 0


def pytest_configure(config: pytest.Config) -> None:
    base_dir = Path(config.invocation_params.dir)
    report = config.getoption("mil_report")
    try:
        suite = Suite(
            model_option=config.getoption("mil_model"),
            seeds=seed_list(config.getoption("mil_seeds")),
            device_name=config.getoption("mil_device"), dim=positive_dim(config),
            base_dir=base_dir, report_path=None if report is None else base_dir / report,
            worker=worker_index(config),
            budget=replace(named_budget(config.getoption("mil_budget")),
                           max_seconds=config.getoption("mil_max_seconds")),
            regime_options={"bag_size": config.getoption("mil_bag_size"),
                            "instances": config.getoption("mil_instances"),
                            "data": config.getoption("mil_data")},
        )
        if suite.regime_options != DEFAULT_REGIME_OPTIONS:
            suite.regime.instance_dim(suite.dim)  # bad options or data fail here, once
        if suite.report_path is not None and suite.worker is None:
            from mil_assert.files import check_writable

            check_writable(suite.report_path)
        if suite.model_option is not None:  # asked for: load now, fail before collecting
            suite.models  # noqa: B018
            suite.device  # noqa: B018
    except ValueError as error:  # ModelSpecError is a ValueError
        raise pytest.UsageError(f"mil-assert: {error}") from None
    config.stash[STATE] = suite
    config.pluginmanager.register(ComplianceSession(suite), "mil-assert-session")


def positive_dim(config: pytest.Config) -> int:
    dim = config.getoption("mil_dim")
    if dim < 1:
        raise ValueError(f"--mil-dim={dim}: the instance dimension must be a positive integer")
    return dim


def _parametrized_by_mark(metafunc: pytest.Metafunc) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if MODEL_ARG in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize each shipped compliance test (``test_<name>`` using ``mil_result``)
    over the selected models; the decorator's tests are parametrized already."""
    if MODEL_ARG not in metafunc.fixturenames or _parametrized_by_mark(metafunc):
        return
    suite = metafunc.config.stash[STATE]
    test = algorithmic_test_of(metafunc.function.__name__)
    try:
        models = suite.models
    except ValueError as error:
        raise pytest.UsageError(f"mil-assert: {error}") from None
    metafunc.parametrize(MODEL_ARG, [pytest.param(spec, id=spec.name, marks=cell_marks(spec, test))
                                     for spec in models])


def algorithmic_test_of(function_name: str) -> str:
    """The algorithmic unit test a compliance function runs: ``test_<name>``."""
    from mil_assert.synthetic import TESTS

    name = function_name.removeprefix("test_")
    if name not in TESTS:
        raise pytest.UsageError(f"{function_name} uses the mil_result fixture, but {name!r} "
                                f"is not a test; known tests: {', '.join(TESTS)} (or use "
                                f"mil_assert.parametrize_with_checks)")
    return name


@pytest.fixture
def mil_test(request: pytest.FixtureRequest) -> str:
    """The algorithmic unit test of this compliance test, from its function name."""
    return algorithmic_test_of(request.function.__name__)


@pytest.fixture
def mil_result(request: pytest.FixtureRequest, mil_model: ModelSpec, mil_test: str) -> CellResult:
    """Train ``mil_model`` on ``mil_test`` over the run's seeds and judge the cell (an
    ``error`` cell for a model that ends the process or calls ``sys.exit``)."""
    result = request.config.stash[STATE].run_cell(mil_model, mil_test)
    request.node.user_properties.append((RESULT_PROPERTY, result.as_dict()))
    return result


def cell_of(item: pytest.Item) -> tuple[str, str] | None:
    """The ``(model, test)`` cell a collected compliance test runs, else ``None``."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    spec = params.get(MODEL_ARG)
    if spec is None or not hasattr(spec, "name"):
        return None
    test = params.get(TEST_ARG)
    if test is None:
        function = getattr(item, "function", None)
        test = getattr(function, "__name__", "").removeprefix("test_")
    return spec.name, test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With a model option, only compliance cells of the models it names run: other tests,
    and a decorated test's cells of other models, are deselected."""
    suite = config.stash[STATE]
    if suite.model_option is None:
        return
    named = {spec.name for spec in suite.models}
    kept = [item for item in items
            if MODEL_ARG in getattr(item, "fixturenames", ()) and (
                (cell := cell_of(item)) is None or cell[0] in named)]
    if len(kept) < len(items):
        suite.others_deselected = sorted(
            {cell[0] for item in items if item not in kept and (cell := cell_of(item))})
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


USES_MIL_ASSERT = re.compile(r"^\s*(from|import)\s+mil_assert\b", re.MULTILINE)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> None:
    """A test file that imports mil_assert can import the repository's own packages, as
    under ``python -m pytest``: the rootdir goes on ``sys.path`` before the file is
    imported (a repository without ``tests/__init__.py`` otherwise gets
    ``ModuleNotFoundError`` for ``from models.x import ...``). Other files change nothing.
    """
    try:
        text = module_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if USES_MIL_ASSERT.search(text):
        import sys

        root = str(parent.config.rootpath)
        if root not in sys.path:
            sys.path.insert(0, root)


class ComplianceSession:
    """Per-run hooks: gathers cell results (also from xdist workers), writes the report,
    prints the matrix. Registered by ``pytest_configure``; silent when no cell ran."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.written: Path | None = None

    def pytest_report_header(self) -> str | None:
        suite = self.suite
        if suite.model_option is None:
            return None
        return (f"mil-assert: models {', '.join(m.name for m in suite.models)}; "
                f"{settings(suite)}")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """In a pytest-xdist worker, compliance cells go first, the longest first
        (:mod:`mil_assert.costs`; other tests follow in their order): xdist's default
        ``load`` scheduling sends items in collection order, so no worker is left with a
        long cell at the end while the others wait. Every worker computes the same order
        (the estimate is a fixed table), as xdist requires; for ``load`` the longest are
        dealt round robin over the workers' first chunks. Results are reported in the
        usual order whatever the order the cells ran in. A run without xdist keeps the
        collection order."""
        workerinput = getattr(config, "workerinput", None)
        if workerinput is None or not any(cell_of(item) for item in items):
            return
        from mil_assert.costs import spec_cost, xdist_load_order

        def cost(item: pytest.Item) -> float:
            if (cell := cell_of(item)) is None:
                return 0.0
            return spec_cost(item.callspec.params[MODEL_ARG], cell[1])

        costs = [cost(item) for item in items]
        load = getattr(config.option, "dist", "load") == "load"
        workers = int(workerinput.get("workercount", 1)) if load else 1
        order = xdist_load_order(costs, workers, getattr(config.option, "maxschedchunk", None))
        items[:] = [items[i] for i in order]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        cells = [cell for item in session.items if (cell := cell_of(item)) is not None]
        self.suite.cells = cells if cells or self.suite.cells is None else self.suite.cells

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        """While compliance cells run here, or in xdist workers this process controls,
        SIGTERM and SIGHUP stop the run as Ctrl-C does: the finished cells' report is
        written (:mod:`mil_assert.interrupts`) and xdist ends its workers."""
        controller = (self.suite.worker is None
                      and getattr(session.config.option, "numprocesses", None))
        if not (self.suite.cells or controller and self.suite.model_option is not None):
            return (yield)
        from mil_assert.interrupts import signals_interrupt

        with signals_interrupt():
            return (yield)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY:
                from mil_assert.results import CellResult

                self.suite.results.append(CellResult.from_dict(value))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        suite = self.suite
        suite.close()
        if suite.worker is None and suite.results and session.exitstatus in (
                pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            from mil_assert.results import LEARNED_NOTHING_STATUS, untrained_models

            if untrained_models(suite.results):  # a model learned nothing: the gate fails
                session.exitstatus = LEARNED_NOTHING_STATUS
        interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
        stopped_by = None
        if interrupted and (suite.cells or suite.model_option is not None):
            from mil_assert.interrupts import STOP_SIGNALS, exit_status, last_stop_signal

            stopped_by = last_stop_signal()
            if stopped_by in STOP_SIGNALS:  # 143 for SIGTERM, 129 for SIGHUP; Ctrl-C: 2
                session.exitstatus = exit_status(stopped_by)
        asked = interrupted and (suite.cells or suite.model_option is not None)
        if suite.worker is not None or suite.report_path is None or not (
                suite.results or asked):
            return
        import signal

        from mil_assert.files import write_json_atomic
        from mil_assert.interrupts import signal_name
        from mil_assert.report import build_report, interruption

        ran = list(dict.fromkeys(test for _, test in suite.cells or ()))
        ran += [r.test for r in suite.results if r.test not in ran]
        stopped = (interruption(signal_name(stopped_by or signal.SIGINT), suite.results,
                                suite.cells) if interrupted else None)
        self.written = write_json_atomic(
            build_report(suite.results, self.model_names, suite.seeds, suite.budget, suite.dim,
                         suite.device, tests=ran, interrupted=stopped, regime=suite.regime),
            suite.report_path)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        suite = self.suite
        if suite.worker is not None:
            return
        if not suite.results:
            ran = any(terminalreporter.stats.get(key) for key in
                      ("passed", "failed", "skipped", "xfailed", "xpassed", "error"))
            if suite.model_option is not None and not ran and not config.option.collectonly:
                others = (f" (the decorated tests collected here judge "
                          f"{', '.join(suite.others_deselected)}, not the models named, so "
                          f"they were deselected)" if suite.others_deselected else "")
                terminalreporter.write_line(
                    f"mil-assert: no compliance test ran for --mil-model={suite.model_option}"
                    f"{others}; outside the mil-assert repository run: {RUN_ANYWHERE}",
                    yellow=True)
            if self.written is not None:
                terminalreporter.write_line(f"report written to {self.written} (interrupted "
                                            f"before any cell finished)")
            return
        from mil_assert.report import contract_lines, format_matrix, training_lines
        from mil_assert.results import untrained_lines

        terminalreporter.section(f"MIL compliance matrix (verdict, test AUC mean ± std "
                                 f"over {len(suite.seeds)} seeds)")
        for line in format_matrix(suite.results, self.model_names).splitlines():
            terminalreporter.write_line(line)
        for line in contract_lines(suite.results):
            terminalreporter.write_line(line)
        for line in untrained_lines(suite.results):
            terminalreporter.write_line(f"FAILED {line}", red=True, bold=True)
        terminalreporter.write_line(settings(suite))
        for line in training_lines(suite.results):
            terminalreporter.write_line(line)
        if suite.report_path is not None:
            terminalreporter.write_line(f"report written to {suite.report_path}")

    @property
    def model_names(self) -> list[str]:
        """The models in matrix order: the run's (the model option's, or the default
        run's), then any other model whose cells ran, in the order they landed. Under
        xdist this process collected nothing, so the run's models are resolved here once
        cells have landed: the report and the matrix never follow the order in which the
        workers finished cells (they start the longest first)."""
        suite = self.suite
        names = ([m.name for m in suite.models]
                 if suite._models is not None or suite.results else [])
        return names + [r.model for r in suite.results if r.model not in names]
