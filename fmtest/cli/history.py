"""`fmtest history DIR --out history.html`: every case's metrics over a folder of results (`fmtest.report.history`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmtest.report import history as report_history
from fmtest.report.history import DEFAULT_TOLERANCE, write_history
from fmtest.util.text import plural


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("history", help="plot every case's metrics over a folder of results JSON files",
                                   description=report_history.__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="folder with results JSON files (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("history.html"), help="HTML file to write")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"a drop larger than this is marked as a regression (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    history = write_history(args.directory, args.out, tolerance=args.tolerance, progress=not args.no_progress)
    for problem in history.problems:
        print(f"fmtest history: skipped {problem}", file=sys.stderr)
    n_regressions = sum(len(found) for found in history.regressions.values())
    print(f"{args.out}: {plural(len(history.runs), 'run')}, {plural(len(history.case_ids()), 'case')}, "
          f"{plural(n_regressions, 'regression')}")
    return 0
