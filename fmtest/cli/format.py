"""How every command prints: tables padded to their widest cell, sizes in binary units, JSON for `--json`."""

from __future__ import annotations

import json
from collections.abc import Sequence

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
