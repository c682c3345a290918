"""`fmtest` command line: weights, cache, config, history, merge, scoreboard, runs, compare around the suite.

One module per command group (`fmtest.cli.<group>`), each with `register_cli(subparsers)`, which adds its
parser and sets `func` to the function that runs it; `fmtest.cli.format` prints tables, sizes and JSON
the same way for all of them. Nothing imports this package back.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fmtest import __version__
from fmtest.errors import FmtestError

# each fmtest.cli.<name> registers its command
COMMANDS = ("weights", "cache", "config", "history", "merge", "scoreboard", "runs", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmtest", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fmtest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fmtest.cli.{name}").register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FmtestError as e:
        from fmtest.util.redact import redact

        print(f"fmtest: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
