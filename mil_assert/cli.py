"""The ``mil-assert`` command: re-render and merge saved compliance reports.

    mil-assert render REPORT.json --format md|tex|csv [--validation] [-o OUT]
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
from mil_assert.render import FORMATS, render
from mil_assert.report import ReportError, load_report, merge_reports, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mil-assert",
        description="Re-render or merge mil-assert compliance reports (JSON written by "
                    "pytest --mil-report). Training and judging happen in pytest.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mil_assert.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser("render", help="print or write a report's matrix as "
                                              "Markdown, LaTeX (booktabs) or CSV")
    show.add_argument("report", help="a JSON report (pytest --mil-report=PATH.json)")
    show.add_argument("--format", choices=FORMATS, default="md", help="output format "
                      "(default md)")
    show.add_argument("--validation", action="store_true",
                      help="LaTeX: add the validation AUC in parentheses")
    show.add_argument("-o", "--output", help="write here instead of standard output")

    merge = commands.add_parser("merge", help="combine reports of different models or "
                                              "tests, run with the same budget and data")
    merge.add_argument("reports", nargs="+", help="two or more JSON reports")
    merge.add_argument("-o", "--output", required=True, help="the merged JSON report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "render":
            text = render(load_report(args.report), args.format, args.validation)
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
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
