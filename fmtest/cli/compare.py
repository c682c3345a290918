"""`fmtest compare A B`: run B against run A, case by case, as `--fm-baseline=A` would judge B.

A and B are results files or stored runs (an id, `last`, `last~1`, `main`: the newest run on branch main).
Exit 1 when a case regresses, 0 otherwise, 2 when a run cannot be found or read.
"""

from __future__ import annotations

import argparse

from fmtest.cli.runs import add_runs_dir_options, runs_dir


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="compare two runs: per-case metric changes with paired 95%% "
                                   "intervals, new slips and false alarms; exit 1 on a regression",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("before", metavar="A", help="the earlier run: a results file, a stored run id, last~1, main")
    parser.add_argument("after", metavar="B", nargs="?", default="last",
                        help="the run judged against A (default: last)")
    add_runs_dir_options(parser)
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.set_defaults(func=_cli_compare)


def _cli_compare(args: argparse.Namespace) -> int:
    from fmtest.cli.format import print_json
    from fmtest.report.compare import render_compare
    from fmtest.report.results_file import read_json
    from fmtest.report.runs import results_path
    from fmtest.verdict.results import to_plain
    from fmtest.verdict.run_diff import diff_runs

    before, after = (results_path(name, lambda: runs_dir(args)) for name in (args.before, args.after))
    diff = diff_runs(read_json(before), read_json(after))
    if args.json:
        print_json({"a": str(before), "b": str(after), "tolerance": diff.tolerance, "regressed": diff.regressed,
                    "cases": [{"case": c.case_id, "status": c.comparison.status, "message": c.comparison.message,
                               "paired": c.comparison.paired, "regressed": c.regressed,
                               "metrics": to_plain(c.comparison.metrics), "new_slips": c.new_slips,
                               "new_false_alarms": c.new_false_alarms} for c in diff.cases]})
    else:
        print(render_compare(diff, _name(args.before, before), _name(args.after, after)))
    return 1 if diff.regressed else 0


def _name(given: str, path) -> str:
    return str(path) if str(path) == given else f"{given} ({path})"
