"""`fmtest merge`: the results of a sharded run (`--fm-shard=K/N`) into one verdict, JSON, HTML and JUnit."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmtest.cli.runs import add_runs_dir_options, runs_dir


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """`fmtest merge`: the results of a sharded run (fmtest.verdict.merge) into one verdict, JSON, HTML and JUnit."""
    parser = subparsers.add_parser("merge", help="join the results of a sharded run (--fm-shard=K/N) into one verdict")
    parser.add_argument("shards", nargs="+", type=Path, metavar="RESULTS", help="each shard's --fm-results JSON")
    parser.add_argument("--results", type=Path, required=True, help="write the merged JSON results here")
    parser.add_argument("--report", type=Path, help="write the HTML scoreboard here")
    parser.add_argument("--junitxml", type=Path, help="write JUnit XML (one testcase per case) here")
    parser.add_argument("--baseline", help="earlier JSON results or a stored run (an id, last, main); a metric "
                        "that drops by more than the tolerance fails")
    parser.add_argument("--require-judged", action="store_true", help="exit 1 when no case was judged (every "
                        "case skipped), as --fm-require-judged does for a run")
    parser.add_argument("--store", action="store_true", help="also keep the merged run in the runs folder "
                        "(fmtest runs list, fmtest compare), as an unsharded pytest run is kept")
    add_runs_dir_options(parser)
    parser.set_defaults(func=_cli_merge)


def _cli_merge(args: argparse.Namespace) -> int:
    """Exit 1 when a case failed or could not be judged, as the pytest run would (and, with --require-judged,
    when no case was judged at all)."""
    import sys

    from fmtest.errors import ConfigError
    from fmtest.report.junit import junit_xml
    from fmtest.report.results_file import read_json, write_json
    from fmtest.report.terminal import render_scoreboard
    from fmtest.util.fsutil import atomic_write, why_unwritable
    from fmtest.util.redact import redact_values
    from fmtest.util.text import plural
    from fmtest.verdict.merge import ShardFile, merge_shards, shard_disagreements

    outputs = {"--results": args.results, "--report": args.report, "--junitxml": args.junitxml}
    taken: dict[Path, str] = {}
    for option, path in outputs.items():  # before reading anything: no merge is lost to an unwritable output
        if path is None:
            continue
        problem = why_unwritable(path)
        if problem:
            raise ConfigError(f"{option}: cannot write {path}: {problem}")
        if path.resolve() in taken or path.resolve() in {p.resolve() for p in args.shards}:
            raise ConfigError(f"{option}: {path} is also {taken.get(path.resolve(), 'an input')}: give each file "
                              "its own path")
        taken[path.resolve()] = option
    from fmtest.report.runs import results_path, store_run

    baseline = read_json(results_path(args.baseline, lambda: runs_dir(args))) if args.baseline else None
    shards = [ShardFile(path, read_json(path)) for path in args.shards]
    results = redact_values(merge_shards(shards, baseline))
    for line in shard_disagreements(shards):
        print(f"fmtest: warning: {line}", file=sys.stderr)
    write_json(results, args.results)
    if args.report:
        from fmtest.report.html import write_html

        write_html(results, args.report)
    if args.junitxml:
        atomic_write(args.junitxml, junit_xml(results))
    print(render_scoreboard(results))
    print(f"merged {plural(len(args.shards), 'shard')} into {args.results}")
    if args.store:
        folder = runs_dir(args)
        try:  # the merged results are written already: a store that fails costs only itself
            print(f"run kept as {store_run(results, folder).stem} in {folder}")
        except (OSError, ValueError) as e:
            print(f"fmtest: warning: run not kept in {folder}: {type(e).__name__}: {e}", file=sys.stderr)
    if not any(c.outcome in ("passed", "failed") for c in results.cases):
        print(f"NO CASE WAS JUDGED ({len(results.cases)} case(s), none passed or failed a gate)"
              + ("" if args.require_judged else ": --require-judged makes this merge fail"))
        if args.require_judged:
            return 1
    return 1 if any(c.outcome in ("failed", "error") for c in results.cases) else 0
