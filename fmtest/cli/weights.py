"""`fmtest weights list | verify | download`: where each checkpoint is expected, and whether it is right."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmtest.cli.format import format_bytes, print_json, print_table
from fmtest.errors import ConfigError
from fmtest.models import download, registry


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="list, verify or download model checkpoints")
    sub = parser.add_subparsers(dest="weights_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", type=Path, default=None,
                        help=f"weights folder (default: ${registry.WEIGHTS_ENV}, else {registry.DEFAULT_WEIGHTS_DIR})")

    listing = sub.add_parser("list", parents=[common], help="expected files, sizes and presence")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_list)
    verify = sub.add_parser("verify", parents=[common], help="hash checkpoints against the registry")
    verify.add_argument("targets", nargs="*", metavar="KEY_OR_FILE",
                        help="registry keys or checkpoint paths (default: every checkpoint present in the folder)")
    verify.set_defaults(func=cmd_verify)
    fetch = sub.add_parser("download", parents=[common], help="download checkpoints (needs internet)")
    fetch.add_argument("keys", nargs="+", help="registry keys, e.g. sam_vit_h")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_download)


def cmd_list(args) -> int:
    folder = registry.weights_dir(args.weights)
    entries = [{"key": spec.key, "path": str(spec.path_in(folder)), "size_bytes": spec.size, "sha256": spec.sha256,
                "present": spec.main_path_in(folder).is_file(), "license": spec.license, "url": spec.url,
                "description": spec.description} for spec in registry.WEIGHTS.values()]
    if args.json:
        print_json({"folder": str(folder), "weights": entries})
        return 0
    print(f"weights folder: {folder}")
    print_table(("key", "expected path", "size", "sha256", "status"),
                [(e["key"], e["path"], format_bytes(e["size_bytes"]), (e["sha256"] or "unverified")[:12],
                  "present" if e["present"] else "missing") for e in entries], right=("size",))
    return 0


def _checkpoints(targets: list[str], folder: Path) -> list[tuple[str, Path]]:
    """(registry key, file to check) for each target: a key (its file in `folder`) or a checkpoint path."""
    checks = []
    for target in targets:
        if target in registry.WEIGHTS:
            checks.append((target, registry.WEIGHTS[target].main_path_in(folder)))
            continue
        path = Path(target).expanduser()
        found = _spec_of_file(path)
        if found is None:
            names = ", ".join(s.filename for s in registry.WEIGHTS.values())
            raise ConfigError(f"{target} is neither a registry key ({', '.join(registry.WEIGHTS)}) "
                              f"nor a checkpoint file named as the registry expects ({names})")
        checks.append(found)
    return checks


def _spec_of_file(path: Path) -> tuple[str, Path] | None:
    """The registry entry a checkpoint path is named after, and the file inside it whose hash is recorded."""
    for spec in registry.WEIGHTS.values():
        if path.name == spec.filename:
            return spec.key, (path / spec.main_file if spec.is_folder else path)
        if spec.is_folder and path.name == spec.main_file and path.parent.name == spec.filename:
            return spec.key, path
    return None


def cmd_verify(args) -> int:
    """Exit 1 when a checked file is missing or its size/sha256 differs from the registry."""
    folder = registry.weights_dir(args.weights)
    if args.targets:
        checks = _checkpoints(args.targets, folder)
    elif not folder.is_dir():
        print(f"weights folder {folder} does not exist (set --weights or ${registry.WEIGHTS_ENV})")
        return 1
    else:
        checks = [(k, s.main_path_in(folder)) for k, s in registry.WEIGHTS.items() if s.main_path_in(folder).is_file()]
        if not checks:
            print(f"no checkpoints present in {folder}")
            return 0
    results = [_verify(key, path) for key, path in checks]
    return 0 if all(results) else 1


def _verify(key: str, path: Path) -> bool:
    """Print one line about the file; False when it is missing or differs from the registry."""
    spec = registry.WEIGHTS[key]
    if not path.is_file():
        print(f"{key}: MISSING {path} (fmtest weights download {key})")
        return False
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        print(f"{key}: BAD SIZE {path}: {size} bytes, expected {spec.size}")
        return False
    sha = registry.file_sha256(path)
    if spec.sha256 is None and spec.sha256_prefix is not None:
        if not sha.startswith(spec.sha256_prefix):
            print(f"{key}: BAD SHA256 {path}: {sha} does not start with {spec.sha256_prefix}, the hash in its name")
            return False
        print(f"{key}: OK {path} (sha256 starts with {spec.sha256_prefix}, the hash in its name)")
    elif spec.sha256 is None:
        print(f"{key}: unverified (no published sha256) {path} sha256={sha}")
    elif sha != spec.sha256:
        print(f"{key}: BAD SHA256 {path}: {sha}, expected {spec.sha256}")
        return False
    else:
        print(f"{key}: OK {path}")
    return True


def cmd_download(args) -> int:
    folder = registry.weights_dir(args.weights)
    unknown = [k for k in args.keys if k not in registry.WEIGHTS]
    if unknown:
        raise ConfigError(f"unknown weights {', '.join(unknown)}; known: {', '.join(registry.WEIGHTS)}")
    for key in args.keys:
        spec = registry.WEIGHTS[key]
        path = download.download(spec, folder, progress=not args.no_progress)
        print(f"{key}: {path}")
    return 0
