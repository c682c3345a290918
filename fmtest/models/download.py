"""Fetch checkpoints over HTTP(S): streamed with a progress bar, resumable, verified, atomically renamed.

Only `fmtest weights download` calls this; nothing downloads at import or model-build time. A
transfer writes `<name>.part` next to the target and resumes from it with an HTTP Range request;
the file gets its final name only after its size and sha256 (where the registry knows them, or the
leading digits of the sha256 that torchvision puts in a file name) match, so a half-downloaded or corrupt
checkpoint is never picked up by a loader; a file whose size nobody states (no pinned size, no
Content-Length) and that no hash checks is refused, since a cut transfer would look whole. What the server says is
checked too: a body shorter than its Content-Length is an interrupted transfer (kept, to resume),
a 206 reply must start where the `.part` ends (else the download starts over from byte 0), a 416 on
resume counts as complete only when the server's total equals the `.part` (or a hash will check it), and a
redirect may not leave the host's own servers (`TRUSTED_REDIRECTS`) or drop from HTTPS to HTTP.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from fmtest.errors import FmtestError
from fmtest.models.registry import WeightSpec, file_sha256

CHUNK = 1 << 20
# Host -> the domains it may redirect a download to: Hugging Face serves large files from its CDNs.
TRUSTED_REDIRECTS = {"huggingface.co": ("huggingface.co", "hf.co")}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(FmtestError):
    """A transfer failed or delivered a file whose size or checksum is wrong."""


def download(spec: WeightSpec, folder: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch one registry entry into `folder`; an HF-layout entry fetches each of its pinned files."""
    folder = Path(folder)
    if not spec.is_folder:
        return fetch(spec.url, spec.path_in(folder), spec.sha256, spec.size, progress, timeout,
                     sha256_prefix=spec.sha256_prefix)
    target = spec.path_in(folder)
    for pinned in spec.files:
        fetch(spec.url + pinned.name, target / pinned.name, pinned.sha256, pinned.size, progress, timeout)
    return target


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
          progress: bool = True, timeout: float = 60.0, *, sha256_prefix: str | None = None) -> Path:
    """Download `url` to `dest`, resuming `dest.part`; raise DownloadError on a size, sha256 or sha256-prefix
    mismatch, and on a file whose completeness nothing can show (no size known, no hash to check)."""
    dest = Path(dest)
    if dest.is_file() and _matches(dest, sha256, size) and _has_prefix(dest, sha256_prefix):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hashed = sha256 is not None or sha256_prefix is not None
    expected = _transfer(url, part, size, progress, timeout, hashed)
    actual_size = part.stat().st_size
    if expected is None and not hashed:
        part.unlink()
        raise DownloadError(f"the server did not say how long the file is (no Content-Length) and the registry pins "
                            f"no size or sha256 for it: {actual_size} bytes arrived, but a transfer cut short cannot "
                            "be told from a whole file, so nothing was kept; run the same command again", dest)
    if expected is not None and actual_size != expected:
        part.unlink()
        raise DownloadError(f"downloaded {actual_size} bytes, expected {expected}; the partial file was removed "
                            "and the next download starts over", dest)
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch: got {actual}, expected {sha256}; the file was removed", dest)
    if not _has_prefix(part, sha256_prefix):
        actual = file_sha256(part)
        part.unlink()
        raise DownloadError(f"sha256 {actual[:16]}... does not start with {sha256_prefix}, the hash in its file name; "
                            "the file was removed", dest)
    os.replace(part, dest)
    return dest


def _matches(path: Path, sha256: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or file_sha256(path) == sha256


def _has_prefix(path: Path, prefix: str | None) -> bool:
    return prefix is None or file_sha256(path).startswith(prefix)


class _NoForeignRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same host or one of its own servers, and never from HTTPS to HTTP."""

    def __init__(self, origin: str):
        self.origin = urlsplit(origin)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urlsplit(urljoin(req.full_url, newurl))
        host = (target.hostname or "").lower()
        home = (self.origin.hostname or "").lower()
        allowed = TRUSTED_REDIRECTS.get(home, (home,))
        if self.origin.scheme == "https" and target.scheme != "https":
            raise DownloadError(f"refused a redirect from HTTPS to {target.scheme.upper()} ({newurl})",
                                self.origin.geturl())
        if not any(host == domain or host.endswith("." + domain) for domain in allowed):
            raise DownloadError(f"refused a redirect to another host ({host}); a checkpoint is only taken from "
                                f"{' or '.join(allowed)}", self.origin.geturl())
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, offset: int, timeout: float):
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    opener = urllib.request.build_opener(_NoForeignRedirects(url))
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, size: int | None, progress: bool, timeout: float, hashed: bool) -> int | None:
    """Bring `part` up to the whole file; returns the size the file must have (pinned, else the server's).
    `hashed`: a sha256 (or its prefix) will check the file, so a size nobody states can be left to it."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        return size  # a previous run got every byte (or too many: the size check says so) before verifying
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at the end: complete, if the server's total agrees
            total = _range(e.headers.get("Content-Range"))[2]
            if total == offset or (total is None and hashed):  # else a stale .part: start over
                return size if size is not None else total
            part.unlink()
            return _transfer(url, part, size, progress, timeout, hashed)
        raise DownloadError(f"HTTP {e.code} {e.reason}", url) from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot connect ({getattr(e, 'reason', e)})", url) from None
    with response:
        resumed = offset > 0 and response.status == 206
        if resumed:
            start, _, total = _range(response.headers.get("Content-Range"))
            if start != offset:  # not the bytes after our .part: start over from byte 0
                response.close()
                part.unlink()
                return _transfer(url, part, size, progress, timeout, hashed)
        else:
            offset, total = 0, None  # a whole file (the server ignored the Range header): start over
        length = response.headers.get("Content-Length")
        body = int(length) if length is not None else None
        if total is None and body is not None:
            total = offset + body
        if size is not None and total is not None and total != size:
            raise DownloadError(f"the server offers {total} bytes, the registry pins {size}", url)
        received = _copy(response, part, offset, resumed, total, progress, url)
    if body is not None and received < body:
        raise DownloadError(f"connection closed after {offset + received} of {offset + body} bytes; run the same "
                            "command again to resume", url)
    return size if size is not None else total


def _range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) of a Content-Range header; None for what it does not say."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if match is None:
        unsatisfied = re.fullmatch(r"bytes \*/(\d+)", (header or "").strip())
        return None, None, int(unsatisfied.group(1)) if unsatisfied else None
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


def _copy(response, part: Path, offset: int, resumed: bool, total: int | None, progress: bool, url: str) -> int:
    """Stream the body into `part` (appended when resuming); returns the bytes received."""
    received = 0
    with open(part, "ab" if resumed else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
        disable=not progress,
    ) as bar:
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(f"transfer interrupted after {offset + received} bytes ({e}); run the same "
                                "command again to resume", url) from None
    return received
