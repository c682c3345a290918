"""Fetch checkpoints over HTTP(S): streamed with a progress bar, resumable, verified, atomically renamed.

Only `fmtest weights download` calls this; nothing downloads at import or model-build time. A
transfer writes `<name>.part` next to the target and resumes from it with an HTTP Range request;
the file gets its final name only after its size and sha256 (where the registry knows them) match,
so a half-downloaded or corrupt checkpoint is never picked up by a loader.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fmtest.errors import FmtestError
from fmtest.models.registry import WeightSpec, file_sha256

CHUNK = 1 << 20


class DownloadError(FmtestError):
    """A transfer failed or delivered a file whose size or checksum is wrong."""


def download(spec: WeightSpec, folder: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch one registry entry into `folder`; an HF-layout entry fetches each of its files."""
    folder = Path(folder)
    if not spec.is_folder:
        return fetch(spec.url, spec.path_in(folder), spec.sha256, spec.size, progress, timeout)
    target = spec.path_in(folder)
    for name in spec.files:
        main = name == spec.main_file
        fetch(spec.url + name, target / name, spec.sha256 if main else None, spec.size if main else None,
              progress, timeout)
    return target


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
          progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming `dest.part`; raise DownloadError on size/sha256 mismatch."""
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _transfer(url, part, size, progress, timeout)
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(f"downloaded {actual_size} bytes, expected {size}; the partial file was removed "
                            "and the next download starts over", dest)
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch: got {actual}, expected {sha256}; the file was removed", dest)
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        return  # a previous run got every byte but stopped before verifying
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range starts at the end: the partial file is complete
            return
        raise DownloadError(f"HTTP {e.code} {e.reason}", url) from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot connect ({getattr(e, 'reason', e)})", url) from None
    with response:
        resumed = offset > 0 and response.status == 206
        if not resumed:
            offset = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
            disable=not progress,
        ) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            except OSError as e:
                raise DownloadError(f"transfer interrupted after {out.tell()} bytes ({e}); run the same "
                                    "command again to resume", url) from None

