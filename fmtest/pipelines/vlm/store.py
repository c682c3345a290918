"""The request store: every VLM request and its answer on disk, so a rerun or a resumed run pays only once.

It lives in the run's cache folder, `<cache dir>/vlm_requests/requests.sqlite` (`store_folder`), and
follows the prediction cache: the run hands a pipeline the folder in `PipelineContext.request_store`,
or None under `--fm-no-cache` (then nothing is read from a store or written to one); a folder that
cannot be written gives one warning and the run goes on without a store (`RequestStore.open_or_none`);
`fmtest cache clear` empties it (`clear_request_store`).

SQLite in WAL mode with one short connection per call: safe from threads and from several
pytest-xdist processes at once. This module imports no SDK and nothing heavy, so the cache commands
can use it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fmtest.errors import DataError
from fmtest.pipelines.vlm.prompts import REFERENCE_CAPTION, TEST_CAPTION
from fmtest.util.sqlite_wal import open_wal

if TYPE_CHECKING:
    from fmtest.data.sample import Label
    from fmtest.pipelines.vlm.client import VLMReply
    from fmtest.pipelines.vlm.prompts import VLMRequest

STORE_FOLDER = "vlm_requests"  # inside the cache folder
DB_NAME = "requests.sqlite"


class RequestStoreUnavailableWarning(UserWarning):
    """The request store's folder cannot be written; the run goes on without one (every image is asked)."""


def store_folder(cache_dir: Path | str) -> Path:
    """Where the request store lives in a cache folder: what the run passes as `PipelineContext.request_store`."""
    return Path(cache_dir) / STORE_FOLDER


@dataclass(frozen=True)
class StoredRecord:
    """A request's last outcome on disk: `answered` ones are replayed; failed ones are resent."""

    key: str
    answered: bool
    label: str | None
    reasoning: str | None
    text: str | None
    prompt_tokens: int
    output_tokens: int
    error: str | None
    failures: int


class RequestStore:
    """Every request and its answer, keyed by hash, in `<dir>/requests.sqlite`.

    An answer is written the moment it arrives, so an interrupted run loses nothing it has paid for.
    Failures are recorded (and counted) but never replace an answer, and never count as one: the next
    run asks again.
    """

    _COLUMNS = ("key", "status", "label", "reasoning", "answer_text", "prompt_tokens", "output_tokens",
                "error", "failures")

    def __init__(self, directory: Path):
        """Open (creating) the store in `directory`; DataError naming the folder or file when it cannot."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the VLM request store folder ({e.strerror})", directory) from None
        self.path = directory / DB_NAME
        self._connect().close()  # creates the file and table once, before any request is sent

    @classmethod
    def open_or_none(cls, directory: Path | None) -> RequestStore | None:
        """The store in `directory`, checked to take a write; None when `directory` is None (no store
        wanted), or, after one RequestStoreUnavailableWarning naming the folder and the reason, when it
        cannot be written (read-only folder or file, a file in the way): every image is then asked and no
        answer kept, instead of every case failing."""
        if directory is None:
            return None
        try:
            store = cls(directory)
            store._check_writable()
        except DataError as e:
            warnings.warn(f"{e}; this run goes on without the VLM request store (no answer is replayed or kept)",
                          RequestStoreUnavailableWarning, stacklevel=2)
            return None
        return store

    def _check_writable(self) -> None:
        """Write a row in a transaction that is rolled back: DataError if the database takes no write."""
        with closing(self._connect()) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO requests (key, status) VALUES ('', '')")
            except sqlite3.OperationalError as e:  # "attempt to write a readonly database", "database is locked"
                raise DataError(f"cannot write to the VLM request store ({e})", self.path) from None
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")

    def _connect(self) -> sqlite3.Connection:
        def setup(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
                    "pipeline TEXT, model TEXT, endpoint TEXT, prompt TEXT, settings TEXT, reference_sha256 TEXT, "
                    "image_sha256 TEXT, sample_id TEXT, label TEXT, reasoning TEXT, answer_text TEXT, "
                    "finish_reason TEXT, prompt_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0, "
                    "attempts INTEGER DEFAULT 0, error TEXT, failures INTEGER DEFAULT 0, updated TEXT)"
                )

        try:
            return open_wal(self.path, setup, timeout_s=60)
        except sqlite3.Error as e:
            raise DataError(f"cannot open the VLM request store: {e}", self.path) from None

    def lookup(self, key: str) -> StoredRecord | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(self._COLUMNS)} FROM requests WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        key, status, label, reasoning, text, prompt_tokens, output_tokens, error, failures = row
        return StoredRecord(key, status == "answered", label, reasoning, text, prompt_tokens or 0,
                            output_tokens or 0, error, failures or 0)

    def record(self, key: str, request: Mapping[str, object], *, reply: VLMReply | None, attempts: int,
               answer: tuple[Label, str] | None = None, error: str | None = None) -> None:
        """Write one outcome: an `answer`, or an `error` (which never overwrites an answer)."""
        answered = answer is not None
        row = {
            "key": key, "status": "answered" if answered else "failed", **request,
            "label": answer[0] if answered else None, "reasoning": answer[1] if answered else None,
            "answer_text": reply.text if reply else None, "finish_reason": reply.finish_reason if reply else None,
            "prompt_tokens": reply.prompt_tokens if reply else 0, "output_tokens": reply.output_tokens if reply else 0,
            "attempts": attempts, "error": error, "failures": 0 if answered else 1,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        if answered:
            conflict = "DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in row if k not in ("key", "failures"))
        else:
            keep = ("key", "failures")
            conflict = ("DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in row if k not in keep)
                        + ", failures = requests.failures + 1 WHERE requests.status != 'answered'")
        with self._connect() as db:
            db.execute(f"INSERT INTO requests ({names}) VALUES ({marks}) ON CONFLICT(key) {conflict}",
                       tuple(row.values()))


def request_key(request: VLMRequest, *, pipeline: str, model: str, endpoint: str, settings: Mapping[str, object],
                sample_id: str) -> tuple[str, dict[str, object]]:
    """(key, row description) of a request: the key hashes all that can change the answer (model, endpoint,
    prompt, captions, the generation `settings` sent, both images); the description is what the row shows."""
    keyed = {"model": model, "endpoint": endpoint, "prompt": request.prompt,
             "captions": [REFERENCE_CAPTION, TEST_CAPTION] if request.captions else [], "settings": settings,
             "reference_sha256": request.reference.sha256, "image_sha256": request.image.sha256}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    described = {"pipeline": pipeline, "model": model, "endpoint": endpoint, "prompt": request.prompt,
                 "settings": json.dumps(settings, sort_keys=True), "reference_sha256": request.reference.sha256,
                 "image_sha256": request.image.sha256, "sample_id": sample_id}
    return key, described


def clear_request_store(cache_dir: Path | str, pipeline: str | None = None) -> int:
    """Delete the stored requests and answers in a cache folder, every pipeline's or one's; returns how many.

    A cache folder without a store is left as it is (0). The file is compacted afterwards; another
    process holding it open just postpones that."""
    path = store_folder(cache_dir) / DB_NAME
    if not path.is_file():
        return 0
    with closing(RequestStore(path.parent)._connect()) as db:
        if pipeline is None:
            removed = db.execute("DELETE FROM requests").rowcount
        else:
            removed = db.execute("DELETE FROM requests WHERE pipeline = ?", (pipeline,)).rowcount
        db.commit()
        try:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass
    return removed
