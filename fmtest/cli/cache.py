"""`fmtest cache info | prune | clear | merge`: the prediction cache (`fmtest.run.cache`) from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from fmtest.cli.format import format_bytes, print_json, print_table
from fmtest.errors import ConfigError
from fmtest.pipelines.vlm.store import clear_request_store
from fmtest.run.cache import (
    DB_NAME,
    DEFAULT_CACHE_DIR,
    PredictionCache,
    clear_derived_files,
)
from fmtest.util.text import plural


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="inspect, prune or clear the prediction cache")
    actions = parser.add_subparsers(dest="cache_command", required=True)
    info = _add_action(actions, "info", _cli_info, "entries and size, per pipeline")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    prune = _add_action(actions, "prune", _cli_prune, "delete predictions written more than DAYS ago")
    prune.add_argument("--older-than", type=_days, required=True, metavar="DAYS",
                       help="age in days (fractions allowed) beyond which entries are deleted")
    _add_action(actions, "clear", _cli_clear, "delete cached predictions")
    merge = actions.add_parser("merge", help="add other cache folders' predictions to one (shards, workers)")
    merge.add_argument("sources", nargs="+", type=Path, metavar="DIR", help="cache folders to merge")
    merge.add_argument("--into", type=Path, required=True, help="the cache folder that receives them")
    merge.set_defaults(func=_cli_merge)


def _add_action(actions, name: str, func, text: str) -> argparse.ArgumentParser:
    p = actions.add_parser(name, help=text)
    p.add_argument("--dir", type=Path, default=DEFAULT_CACHE_DIR, help="cache folder (default %(default)s)")
    p.add_argument("--pipeline", help="only this pipeline's entries")
    p.set_defaults(func=func)
    return p


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"--older-than needs a number of days >= 0, got {text!r}")
    return days


def _check_pipeline(args: argparse.Namespace, cached: Iterable[str]) -> None:
    """A --pipeline that is neither a pipeline fmtest knows nor one with entries here is a typo: refused with
    the nearest name, instead of "removed 0 entries"."""
    from fmtest.pipelines import known_pipelines
    from fmtest.util.extensions import unknown_name

    known = list(dict.fromkeys([*known_pipelines(), *sorted(cached)]))
    if args.pipeline is not None and args.pipeline not in known:
        raise ConfigError(f"--pipeline: {unknown_name('pipeline', args.pipeline, known)}")


def _cli_info(args: argparse.Namespace) -> int:
    if (args.dir / DB_NAME).exists():
        with PredictionCache(args.dir) as cache:
            info = cache.info()
    else:
        info = {"path": str(args.dir / DB_NAME), "entries": 0, "bytes": 0, "payload_bytes": 0, "pipelines": {}}
    _check_pipeline(args, info["pipelines"])
    info["exists"] = (args.dir / DB_NAME).exists()
    if args.pipeline is not None:
        info["pipelines"] = {k: v for k, v in info["pipelines"].items() if k == args.pipeline}
    if args.json:
        print_json(info)
        return 0
    if not info["exists"]:
        print(f"{args.dir}: no prediction cache")
        return 0
    print(f"{info['path']}: {plural(info['entries'], 'entry', 'entries')}, {format_bytes(info['bytes'])} on disk")
    if info["pipelines"]:
        print_table(("pipeline", "entries", "stored"),
                    [(name, str(row["entries"]), format_bytes(row["payload_bytes"]))
                     for name, row in info["pipelines"].items()], right=("entries", "stored"), indent="  ")
    return 0


def _cli_prune(args: argparse.Namespace) -> int:
    _check_pipeline(args, _cached_pipelines(args.dir))
    if not (args.dir / DB_NAME).exists():
        print(f"{args.dir}: no prediction cache")
        return 0
    with PredictionCache(args.dir) as cache:
        removed = cache.prune(args.older_than * 86400, args.pipeline)
        left = cache.info()
    what = f"pipeline {args.pipeline}" if args.pipeline else "all pipelines"
    print(f"{args.dir}: removed {plural(removed, 'entry', 'entries')} older than {args.older_than:g} days ({what}); "
          f"{left['entries']} left, {format_bytes(left['bytes'])} on disk")
    return 0


def _cli_clear(args: argparse.Namespace) -> int:
    """The predictions and the stored VLM requests (a store can exist without predictions)."""
    _check_pipeline(args, _cached_pipelines(args.dir))
    what = f"pipeline {args.pipeline}" if args.pipeline else "all pipelines"
    requests = clear_request_store(args.dir, args.pipeline)
    if requests:
        print(f"{args.dir}: removed {plural(requests, 'stored VLM request')} ({what})")
    if args.pipeline is None and (derived := clear_derived_files(args.dir)):
        print(f"{args.dir}: removed {plural(derived, 'derived file')} (generated samples, thumbnails)")
    if not (args.dir / DB_NAME).exists():
        print(f"{args.dir}: no prediction cache")
        return 0
    with PredictionCache(args.dir) as cache:
        removed = cache.clear(args.pipeline)
        left = cache.info()
    print(f"{args.dir}: removed {plural(removed, 'entry', 'entries')} ({what}); {left['entries']} left, {format_bytes(left['bytes'])} on disk")
    return 0


def _cached_pipelines(folder: Path) -> list[str]:
    if not (folder / DB_NAME).exists():
        return []
    with PredictionCache(folder) as cache:
        return list(cache.info()["pipelines"])


def _cli_merge(args: argparse.Namespace) -> int:
    with PredictionCache(args.into) as cache:
        for source in args.sources:
            taken, damaged = cache.merge_from(source)
            print(f"{source}: {taken} entries merged" + (f", {damaged} damaged entries skipped" if damaged else ""))
        print(f"{args.into}: {cache.info()['entries']} entries")
    return 0
