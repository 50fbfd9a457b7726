"""The ``mil-assert`` command: re-render and merge saved compliance reports.

    mil-assert render REPORT.json --format md|tex|csv|png|method|bib|all [--validation] [-o OUT]
    mil-assert merge A.json B.json [...] -o MERGED.json

Training happens in pytest (``pytest --model=... --mil-report=REPORT.json``); this
command never retrains. Bad input ends with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import mil_assert
from mil_assert.figure import plot_report
from mil_assert.render import TEXT_FORMATS, render
from mil_assert.report import ReportError, load_report, merge_reports, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mil-assert",
        description="Re-render or merge mil-assert compliance reports (JSON written by "
                    "pytest --mil-report). Training and judging happen in pytest.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mil_assert.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return parser


ALL_FILES = {"md": ".md", "tex": ".tex", "csv": ".csv", "method": "-method.txt",
             "bib": ".bib", "png": ".png"}


def render_command(args: argparse.Namespace) -> None:
    report = load_report(args.report)
    source = Path(args.report)
    if args.format == "all":
        folder = Path(args.output) if args.output else source.parent
        folder.mkdir(parents=True, exist_ok=True)
        for fmt, suffix in ALL_FILES.items():
            target = folder / f"{source.stem}{suffix}"
            if fmt == "png":
                plot_report(report, target)
            else:
                target.write_text(render(report, fmt, args.validation), encoding="utf-8")
            print(f"wrote {target}")
    elif args.format == "png":
        target = plot_report(report, args.output or source.with_suffix(".png"))
        print(f"wrote {target}")
    else:
        text = render(report, args.format, args.validation)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "render":
            render_command(args)
        else:
            merged = merge_reports([(path, load_report(path)) for path in args.reports])
            write_json_atomic(merged, args.output)
            print(f"merged {len(args.reports)} reports ({len(merged['results'])} cells) "
                  f"into {args.output}")
    except (ReportError, OSError) as error:
        print(f"mil-assert: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
