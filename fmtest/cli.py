"""`fmtest` command line: weights, cache and history tools around the pytest suite.

Each command group lives beside the code it drives and exposes `register_cli(subparsers)`,
which adds its parser and sets `func` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fmtest.errors import FmtestError

COMMAND_MODULES = ("fmtest.models.commands", "fmtest.cache", "fmtest.report.history", "fmtest.config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmtest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
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
