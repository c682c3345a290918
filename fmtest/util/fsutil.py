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
