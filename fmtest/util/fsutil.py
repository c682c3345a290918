"""Atomic file writes: a run killed mid-write leaves the previous file, never half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path | str, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and one rename.

    `mode` defaults to world-readable: results, reports and caches are meant to be shared (CI
    artifacts, web servers), and mkstemp alone would make them owner-only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def why_unwritable(path: Path | str, *, folder: bool = False) -> str | None:
    """Why a file (or, with `folder`, a folder) could not be written at `path`, or None when it could: checked
    before a long run, so its outputs are not lost at the end."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            return "a file is in the way of that folder"
        if not folder and path.is_dir():
            return "it is a folder"
        if folder:
            return None if os.access(path, os.W_OK | os.X_OK) else "no permission to write in it"
        return None if os.access(path, os.W_OK) else "no permission to overwrite it"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"no permission to write in {parent}"
