"""`fmtest merge`: the results of a sharded run (`--fm-shard=K/N`) into one verdict, JSON, HTML and JUnit."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """`fmtest merge`: the results of a sharded run (fmtest.verdict.merge) into one verdict, JSON, HTML and JUnit."""
    parser = subparsers.add_parser("merge", help="join the results of a sharded run (--fm-shard=K/N) into one verdict")
    parser.add_argument("shards", nargs="+", type=Path, metavar="RESULTS", help="each shard's --fm-results JSON")
    parser.add_argument("--results", type=Path, required=True, help="write the merged JSON results here")
    parser.add_argument("--report", type=Path, help="write the HTML scoreboard here")
    parser.add_argument("--junitxml", type=Path, help="write JUnit XML (one testcase per case) here")
    parser.add_argument("--baseline", type=Path, help="earlier JSON results; a metric that drops by more than "
                        "the tolerance fails")
    parser.set_defaults(func=_cli_merge)


def _cli_merge(args: argparse.Namespace) -> int:
    """Exit 1 when a case failed or could not be judged, as the pytest run would."""
    from fmtest.report.junit import junit_xml
    from fmtest.util.text import plural
    from fmtest.report.terminal import render_scoreboard
    from fmtest.util.fsutil import atomic_write
    from fmtest.report.results_file import read_json, write_json
    from fmtest.verdict.merge import ShardFile, merge_shards

    baseline = read_json(args.baseline) if args.baseline else None
    results = merge_shards([ShardFile(path, read_json(path)) for path in args.shards], baseline)
    write_json(results, args.results)
    if args.report:
        from fmtest.report.html import write_html

        write_html(results, args.report)
    if args.junitxml:
        atomic_write(args.junitxml, junit_xml(results))
    print(render_scoreboard(results))
    print(f"merged {plural(len(args.shards), 'shard')} into {args.results}")
    return 1 if any(c.outcome in ("failed", "error") for c in results.cases) else 0
