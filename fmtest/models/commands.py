"""`fmtest weights list | verify | download`: where each checkpoint is expected, and whether it is right."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmtest.errors import ConfigError
from fmtest.models import download, registry


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="list, verify or download model checkpoints")
    sub = parser.add_subparsers(dest="weights_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", type=Path, default=None,
                        help=f"weights folder (default: ${registry.WEIGHTS_ENV}, else {registry.DEFAULT_WEIGHTS_DIR})")

    sub.add_parser("list", parents=[common], help="expected files, sizes and presence").set_defaults(func=cmd_list)
    verify = sub.add_parser("verify", parents=[common], help="hash present checkpoints against the registry")
    verify.add_argument("keys", nargs="*", help="registry keys (default: every present checkpoint)")
    verify.set_defaults(func=cmd_verify)
    fetch = sub.add_parser("download", parents=[common], help="download checkpoints (needs internet)")
    fetch.add_argument("keys", nargs="+", help="registry keys, e.g. sam_vit_h")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_download)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cmd_list(args) -> int:
    folder = registry.weights_dir(args.weights)
    print(f"weights folder: {folder}")
    rows = [("key", "expected path", "size", "sha256", "status")]
    for spec in registry.WEIGHTS.values():
        present = spec.main_path_in(folder).is_file()
        rows.append((spec.key, str(spec.path_in(folder)), _size(spec.size),
                     spec.sha256[:12] if spec.sha256 else "unverified", "present" if present else "missing"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _keys(keys: list[str]) -> list[str]:
    unknown = [k for k in keys if k not in registry.WEIGHTS]
    if unknown:
        raise ConfigError(f"unknown weights {', '.join(unknown)}; known: {', '.join(registry.WEIGHTS)}")
    return keys


def cmd_verify(args) -> int:
    """Exit 1 when a checked file is missing or its size/sha256 differs from the registry."""
    folder = registry.weights_dir(args.weights)
    keys = _keys(args.keys) or [k for k, s in registry.WEIGHTS.items() if s.main_path_in(folder).is_file()]
    if not keys:
        print(f"no checkpoints present in {folder}")
        return 0
    failed = False
    for key in keys:
        spec = registry.WEIGHTS[key]
        path = spec.main_path_in(folder)
        if not path.is_file():
            print(f"{key}: MISSING {path} (fmtest weights download {key})")
            failed = True
            continue
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            print(f"{key}: BAD SIZE {path}: {size} bytes, expected {spec.size}")
            failed = True
            continue
        sha = registry.file_sha256(path)
        if spec.sha256 is None:
            print(f"{key}: unverified (no published sha256) {path} sha256={sha}")
        elif sha != spec.sha256:
            print(f"{key}: BAD SHA256 {path}: {sha}, expected {spec.sha256}")
            failed = True
        else:
            print(f"{key}: OK {path}")
    return 1 if failed else 0


def cmd_download(args) -> int:
    folder = registry.weights_dir(args.weights)
    for key in _keys(args.keys):
        spec = registry.WEIGHTS[key]
        path = download.download(spec, folder, progress=not args.no_progress)
        print(f"{key}: {path}")
    return 0
