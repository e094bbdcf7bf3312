"""``cape-bench report`` (the HTML report) and ``cape-bench tables`` (paper-style tables) of run directories."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    report = sub.add_parser("report", help="render the self-contained HTML report of one or more run directories")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="output file (default: reports/<run name>.html)")
    report.set_defaults(func=cmd_report)

    tables = sub.add_parser("tables", help="print the headline table (methods × splits + mean) of run directories")
    tables.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    tables.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    tables.add_argument("--metric", default="PCK@0.2")
    tables.set_defaults(func=cmd_tables)

    return report


def cmd_report(args) -> int:
    from cape_bench.report import build_report  # noqa: PLC0415

    path = build_report(args.run_dirs, args.out)
    print(f"report: {path}")
    return 0


def cmd_tables(args) -> int:
    from cape_bench.report.paper_tables import render_tables  # noqa: PLC0415

    print(render_tables(args.run_dirs, args.format, metric=args.metric))
    return 0
