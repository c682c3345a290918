"""`fmtest runs list`: the runs pytest kept in the runs folder (`--fm-runs-dir`), oldest first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "skipped")


def add_runs_dir_options(parser: argparse.ArgumentParser) -> None:
    """`--runs-dir` and `--config`: where the stored runs are, found as a pytest run finds them."""
    parser.add_argument("--runs-dir", help="the runs folder (default: as pytest keeps runs: --fm-runs-dir's "
                        "environment variable, the suite config's runs_dir, else .fmtest_runs here)")
    parser.add_argument("--config", type=Path, help="the suite config whose runs_dir to read (default: found "
                        "as pytest finds it)")


def runs_dir(args: argparse.Namespace) -> Path:
    from fmtest.config.settings import runs_folder

    return runs_folder(Path.cwd(), config_path=args.config, runs_dir=args.runs_dir)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="the runs kept in the runs folder (--fm-runs-dir)",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="runs_command", required=True)
    listing = sub.add_parser("list", help="every stored run: id, time, commit, branch, case outcomes")
    add_runs_dir_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_cli_list)


def _cli_list(args: argparse.Namespace) -> int:
    from fmtest.cli.format import print_json, print_table
    from fmtest.report.runs import list_runs

    folder = runs_dir(args)
    runs, problems = list_runs(folder)
    for problem in problems:
        print(f"fmtest runs: skipped {problem}", file=sys.stderr)
    if args.json:
        print_json([{"id": r.id, "path": str(r.path), "created": r.created, "git_commit": r.git_commit,
                     "git_branch": r.git_branch, **{o: r.outcomes.get(o, 0) for o in OUTCOMES},
                     "interrupted": r.interrupted, "unfinished": r.unfinished, "merged_shards": r.merged_shards}
                    for r in runs])
        return 0
    if not runs:
        print(f"no stored run in {folder} (pytest keeps each run there unless --fm-no-store)")
        return 0
    rows = [[r.id, r.created, (r.git_commit or "")[:10], r.git_branch or "",
             *(str(r.outcomes.get(o, 0)) for o in OUTCOMES), _note(r)] for r in runs]
    print_table(["id", "time", "commit", "branch", *OUTCOMES, "note"], rows, right=OUTCOMES)
    return 0


def _note(run) -> str:
    notes = []
    if run.interrupted:
        notes.append(f"INTERRUPTED ({run.unfinished} unfinished)")
    if run.merged_shards:
        notes.append(f"merged from {run.merged_shards} shards")
    return ", ".join(notes)
