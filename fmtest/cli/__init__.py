"""`fmtest` command line: weights, cache and history tools around the pytest suite.

Each command group lives beside the code it drives and exposes `register_cli(subparsers)`,
which adds its parser and sets `func` to the function that runs it. Tables are printed with
`print_table` and sizes with `format_bytes`, so every command reads the same way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fmtest import __version__
from fmtest.errors import FmtestError

COMMAND_MODULES = ("fmtest.cli.weights", "fmtest.run.cache", "fmtest.report.history", "fmtest.config.suite")
_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(n: int | None) -> str:
    """A size in binary units, as `du -h` counts: 375042383 -> '357.7 MiB', 2564550879 -> '2.39 GiB'."""
    if n is None:
        return "unknown"
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in _BINARY_UNITS:
        if round(size, 1) < 1024 or unit == _BINARY_UNITS[-1]:
            return f"{size:.{2 if size < 10 else 1}f} {unit}"
        size /= 1024


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[str] = (),
                indent: str = "") -> None:
    """Columns padded to their widest cell; columns named in `right` (numbers) are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).rjust(w) if name in right else str(c).ljust(w)
                 for c, w, name in zip(row, widths, header, strict=True)]
        print((indent + "  ".join(cells)).rstrip())


def print_json(payload: object) -> None:
    """Machine-readable output for `--json`: one JSON document on stdout."""
    print(json.dumps(payload, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmtest", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fmtest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    _register_merge(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FmtestError as e:
        print(f"fmtest: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())


def _register_merge(subparsers: argparse._SubParsersAction) -> None:
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
    from fmtest.util.fsutil import atomic_write
    from fmtest.verdict.merge import junit_xml, merge_files
    from fmtest.report.terminal import render_scoreboard
    from fmtest.verdict.regression import load_baseline
    from fmtest.verdict.results import write_json

    baseline = load_baseline(args.baseline) if args.baseline else None
    results = merge_files(args.shards, baseline)
    write_json(results, args.results)
    if args.report:
        from fmtest.report.html import write_html

        write_html(results, args.report)
    if args.junitxml:
        atomic_write(args.junitxml, junit_xml(results))
    print(render_scoreboard(results))
    print(f"merged {len(args.shards)} shard(s) into {args.results}")
    return 1 if any(c.outcome in ("failed", "error") for c in results.cases) else 0
