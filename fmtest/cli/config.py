"""`fmtest config`: check a suite config, print a case's effective settings as TOML, or the config reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmtest.config import schema
from fmtest.config.lookup import CONFIG_NAME, find_config
from fmtest.config.suite import load_config
from fmtest.errors import ConfigError


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check the suite config; show a case's effective settings")
    parser.add_argument("--config", type=Path, help=f"suite config (default suites/{CONFIG_NAME})")
    parser.add_argument("--case", help="print this case's effective settings as TOML, e.g. saa_plus-mvtec")
    parser.add_argument("--group", help="the dataset group (MVTec AD category) to show the settings of")
    parser.add_argument("--reference", action="store_true", help="print the config reference (Markdown)")
    parser.set_defaults(func=_cli_config)


def _cli_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(schema.markdown_reference(), end="")
        return 0
    path = args.config or find_config([], Path.cwd())
    config = load_config(path)
    if args.case:
        print(config.effective_settings(args.case, args.group), end="")
        return 0
    if args.group:
        raise ConfigError("--group needs --case")
    defined = [f"{n} (uses {e.uses})" if e.uses else f"{n} (class {e.class_path})"
               for n, e in config.pipeline_entries.items() if e.uses or e.class_path]
    print(f"{path or 'no suite config: built-in defaults'}: valid")
    if defined:
        print("pipelines defined here: " + ", ".join(defined))
    return 0


