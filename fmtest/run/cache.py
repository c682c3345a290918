"""Prediction cache: a rerun re-scores stored predictions instead of running the models again.

Entries are keyed by (pipeline fingerprint, model id, image sha256), so changing one pipeline
setting changes that pipeline's fingerprint and only its entries miss.

The store is one SQLite database (stdlib, no home-made format) rather than one file per key:
- a transaction is atomic and journaled, so a writer killed mid-write never leaves a half entry;
- WAL mode lets pytest-xdist workers read while one writes, and the busy timeout makes
  concurrent writers wait their turn instead of failing;
- size reports, per-pipeline counts and clearing one pipeline are single queries, and a CI
  cache step saves one file instead of tens of thousands.
A prediction's score map is kept only as the scoreboard's viewer draws it (`SCORE_MAP_SIDE`), so a run served
from the cache shows score maps too. Each entry also carries a checksum of its blob, so damage SQLite cannot see (a truncated or
bit-flipped blob, a file restored badly by a CI cache) is caught: the entry is reported
(`stats.corrupt` and a `CacheCorruptionWarning` naming the key), deleted and treated as a miss.
Beside each prediction of a segmentation pipeline with a score map, a side table keeps the image's region
summary (`fmtest.metrics.region`), keyed by the prediction's key and a hash of the ground truth it was
summarised against: it is computed from the full-size score map, which the cache does not keep, so a warm
run reads it here and gives the cold run's region figures bit for bit (`region_summaries`, `put_regions`).
A cache folder that cannot be written (read-only, a file in its place) is not a reason to fail a
run: `PredictionCache.open_or_none` warns once and the run goes on without a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmtest.errors import ConfigError
from fmtest.imaging.overlay import score_map_from_levels, score_map_levels, shrunk_size
from fmtest.metrics.functional import MetricInputError
from fmtest.metrics.region import ImageRegionSummary
from fmtest.pipelines.base import Prediction
from fmtest.util.fsutil import atomic_write
from fmtest.util.sqlite_wal import open_wal

DEFAULT_CACHE_DIR = Path(".fmtest_cache")
DB_NAME = "predictions.sqlite"
SCHEMA_VERSION = 2  # 2 added the region_summaries table; a version-1 file keeps its predictions
BUSY_TIMEOUT_S = 60.0
_HEADER = struct.Struct("<I")  # length of the JSON metadata that precedes the packed mask bits
# A score map is kept as the viewer shows it (its 256 colour levels, `fmtest.imaging.overlay.score_map_levels`)
# at most this many pixels on its long side: a heat map at this size costs a few KiB an entry, where the map at
# the image's size in float32 would outweigh everything else in the cache.
SCORE_MAP_SIDE = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    fingerprint TEXT NOT NULL,
    model_id TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    payload BLOB NOT NULL,
    checksum BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, model_id, image_sha256)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_pipeline ON predictions (pipeline);
CREATE TABLE IF NOT EXISTS region_summaries (
    fingerprint TEXT NOT NULL,
    model_id TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    truth_sha256 TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    payload BLOB NOT NULL,
    checksum BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, model_id, image_sha256, truth_sha256)
) WITHOUT ROWID;
"""
_TABLES = ("predictions", "region_summaries")


class CacheCorruptionWarning(UserWarning):
    """A cache entry or file could not be read back; it was discarded and will be recomputed."""


class CacheUnavailableWarning(UserWarning):
    """The cache folder cannot be written; the run goes on without a prediction cache."""


class CorruptEntry(ValueError):
    """Raised by `decode_prediction` when a payload is damaged."""


@dataclass
class CacheStats:
    """What this process did with the cache; the plugin sums these over xdist workers."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def encode_prediction(prediction: Prediction) -> bytes:
    """Serialise a Prediction: JSON metadata, the mask as packed bits and the score map as the viewer's colour
    levels (`SCORE_MAP_SIDE`), zlib-compressed."""
    mask = prediction.mask
    shape = None
    bits = b""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.ndim != 2:
            raise TypeError(f"a cached mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
        shape = list(mask.shape)
        bits = np.packbits(mask, axis=None).tobytes()
    levels = None
    if prediction.score_map is not None:
        score_map = np.asarray(prediction.score_map)
        levels = score_map_levels(score_map, shrunk_size(score_map.shape, SCORE_MAP_SIDE))
    meta = {
        "label": prediction.label,
        "score": None if prediction.score is None else float(prediction.score),
        "reasoning": prediction.reasoning,
        "error": prediction.error,
        "usage": {k: float(v) for k, v in dict(prediction.usage).items()},
        "mask_shape": shape,
        "score_map_shape": None if levels is None else list(levels.shape),
    }
    head = json.dumps(meta, separators=(",", ":")).encode()
    tail = b"" if levels is None else levels.tobytes()
    return zlib.compress(_HEADER.pack(len(head)) + head + bits + tail, level=1)


def decode_prediction(payload: bytes) -> Prediction:
    """Inverse of `encode_prediction`; raises CorruptEntry on any inconsistency."""
    try:
        raw = zlib.decompress(payload)
        (n_head,) = _HEADER.unpack_from(raw)
        meta = json.loads(raw[_HEADER.size : _HEADER.size + n_head])
        rest = np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size + n_head)
        map_hw = meta.get("score_map_shape")  # absent in entries written before score maps were kept
        n_levels = 0 if map_hw is None else map_hw[0] * map_hw[1]
        bits, levels = rest[: rest.size - n_levels], rest[rest.size - n_levels :]
        mask = None
        if meta["mask_shape"] is not None:
            h, w = meta["mask_shape"]
            if bits.size != (h * w + 7) // 8:
                raise CorruptEntry(f"mask has {bits.size} bytes, {h}x{w} needs {(h * w + 7) // 8}")
            mask = np.unpackbits(bits, count=h * w).view(np.bool_).reshape(h, w)
        elif bits.size:
            raise CorruptEntry(f"{bits.size} stray bytes after the metadata")
        if levels.size != n_levels:
            raise CorruptEntry(f"score map has {levels.size} bytes, {map_hw} needs {n_levels}")
        score_map = None if map_hw is None else score_map_from_levels(levels.reshape(map_hw))
        return Prediction(label=meta["label"], score=meta["score"], mask=mask, reasoning=meta["reasoning"],
                          error=meta["error"], usage=meta["usage"], score_map=score_map)
    except CorruptEntry:
        raise
    except (zlib.error, struct.error, ValueError, KeyError, TypeError) as e:
        raise CorruptEntry(f"{type(e).__name__}: {e}") from None


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


class PredictionCache:
    """Predictions stored in `directory/predictions.sqlite`; safe to share between processes.

    A connection is opened lazily per process (a forked worker never reuses its parent's), and
    a lock serialises threads of one process.
    """

    def __init__(self, directory: Path | str = DEFAULT_CACHE_DIR):
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    @classmethod
    def open_or_none(cls, directory: Path | str = DEFAULT_CACHE_DIR) -> PredictionCache | None:
        """The cache in `directory`, checked to take a write; None, after one CacheUnavailableWarning
        naming the folder and the reason, when it cannot (read-only folder or file, a file in the way,
        a locked database): every prediction is then computed and none stored, instead of every case failing."""
        cache = cls(directory)
        try:
            cache._check_writable()
        except (ConfigError, OSError) as e:  # OSError: a damaged file that cannot be moved aside
            cache.close()
            warnings.warn(f"{e}; this run goes on without the prediction cache (nothing is read from it or stored)",
                          CacheUnavailableWarning, stacklevel=2)
            return None
        return cache

    def _check_writable(self) -> None:
        """Open the database and write a row in a transaction that is rolled back: ConfigError if either fails."""
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO predictions VALUES ('', '', '', '', x'', x'', 0)")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError as e:  # "attempt to write a readonly database", "database is locked"
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise ConfigError(f"cannot write to the prediction cache ({e})", self.path) from None

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the prediction cache folder ({e.strerror})", self.directory) from None
        try:
            conn = self._open()
        except sqlite3.OperationalError as e:  # unopenable, read-only, locked too long: not a damaged file
            raise ConfigError(f"cannot open the prediction cache ({e}); choose another --fm-cache folder "
                              "or run with --fm-no-cache", self.path) from None
        except sqlite3.DatabaseError as e:
            conn = self._replace_damaged_file(e)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        def setup(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash may lose the last entries, never corrupt
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if version not in (0, 1):  # written by another fmtest version: a cache is disposable, start over
                    for name in _TABLES:
                        conn.execute(f"DROP TABLE IF EXISTS {name}")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        return open_wal(self.path, setup, timeout_s=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)

    def _replace_damaged_file(self, error: sqlite3.DatabaseError) -> sqlite3.Connection:
        """A database SQLite cannot open (truncated, not a database) is moved aside and started afresh."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}")
        warnings.warn(
            f"{self.path}: prediction cache unreadable ({error}); moved to {aside.name}, predictions will be recomputed",
            CacheCorruptionWarning, stacklevel=3,
        )
        self.stats.corrupt += 1
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:  # no such companion file, or another worker moved it first
                pass
        return self._open()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> PredictionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # a cache handed to another process reconnects there
        state = self.__dict__.copy()
        state.update(_conn=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- entries ----------------------------------------------------------------------------------
    def get(self, fingerprint: str, model_id: str, image_sha256: str) -> Prediction | None:
        """The stored prediction, or None on a miss (a damaged entry counts as a miss)."""
        return self.get_many(fingerprint, model_id, [image_sha256]).get(image_sha256)

    def get_many(self, fingerprint: str, model_id: str, image_sha256s: Iterable[str]) -> dict[str, Prediction]:
        """Stored predictions for a batch of images, by image sha256; absent keys are misses."""
        wanted = list(dict.fromkeys(image_sha256s))
        found: dict[str, Prediction] = {}
        damaged: list[tuple[str, str]] = []
        with self._lock:
            conn = self._connect()
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    "SELECT image_sha256, payload, checksum FROM predictions WHERE fingerprint=? AND model_id=? "
                    f"AND image_sha256 IN ({','.join('?' * len(chunk))})",
                    [fingerprint, model_id, *chunk],
                ).fetchall()
                for sha, payload, checksum in rows:
                    try:
                        if _checksum(payload) != checksum:
                            raise CorruptEntry("checksum mismatch (truncated or altered blob)")
                        found[sha] = decode_prediction(payload)
                    except CorruptEntry as e:
                        damaged.append((sha, str(e)))
            for sha, reason in damaged:
                warnings.warn(
                    f"{self.path}: damaged cache entry (pipeline fingerprint {fingerprint}, model {model_id}, "
                    f"image {sha}): {reason}; discarded, will be recomputed",
                    CacheCorruptionWarning, stacklevel=3,
                )
                conn.execute(
                    "DELETE FROM predictions WHERE fingerprint=? AND model_id=? AND image_sha256=?",
                    (fingerprint, model_id, sha),
                )
            self.stats.hits += len(found)
            self.stats.corrupt += len(damaged)
            self.stats.misses += len(wanted) - len(found)
        return found

    def put_many(self, fingerprint: str, model_id: str, predictions: Mapping[str, Prediction], *,
                 pipeline: str) -> None:
        """Store a batch in one transaction: all of it lands, or (if the writer dies) none of it.

        `pipeline` is the pipeline's name, for `info` and `clear`."""
        now = time.time()
        rows = []
        for sha, prediction in predictions.items():
            payload = encode_prediction(prediction)
            rows.append((fingerprint, model_id, sha, pipeline, payload, _checksum(payload), now))
        self._insert_all("predictions", rows)
        self.stats.writes += len(rows)

    def get_regions(self, fingerprint: str, model_id: str,
                    truths: Mapping[str, str]) -> dict[str, ImageRegionSummary]:
        """Stored region summaries by image sha256, for `truths` (image sha256 -> ground-truth hash); an absent or
        damaged one is not returned (the caller predicts that image again). Their `image_id` is empty: the caller's."""
        found: dict[str, ImageRegionSummary] = {}
        damaged: list[tuple[str, str, str]] = []
        wanted = list(truths.items())
        with self._lock:
            conn = self._connect()
            for start in range(0, len(wanted), 250):  # two parameters a key: under SQLite's bound-parameter limit
                chunk = wanted[start : start + 250]
                rows = conn.execute(
                    "SELECT image_sha256, truth_sha256, payload, checksum FROM region_summaries WHERE fingerprint=? "
                    "AND model_id=? AND (" + " OR ".join(["(image_sha256=? AND truth_sha256=?)"] * len(chunk)) + ")",
                    [fingerprint, model_id, *(x for pair in chunk for x in pair)]).fetchall()
                for sha, truth, payload, checksum in rows:
                    try:
                        if _checksum(payload) != checksum:
                            raise CorruptEntry("checksum mismatch (truncated or altered blob)")
                        found[sha] = ImageRegionSummary.from_dict(json.loads(zlib.decompress(payload)))
                    except (CorruptEntry, MetricInputError, zlib.error, ValueError) as e:
                        damaged.append((sha, truth, str(e)))
            for sha, truth, reason in damaged:
                warnings.warn(f"{self.path}: damaged region summary (pipeline fingerprint {fingerprint}, model "
                              f"{model_id}, image {sha}): {reason}; discarded, will be recomputed",
                              CacheCorruptionWarning, stacklevel=3)
                conn.execute("DELETE FROM region_summaries WHERE fingerprint=? AND model_id=? AND image_sha256=? "
                             "AND truth_sha256=?", (fingerprint, model_id, sha, truth))
            self.stats.corrupt += len(damaged)
        return found

    def put_regions(self, fingerprint: str, model_id: str, summaries: Mapping[str, tuple[str, ImageRegionSummary]],
                    *, pipeline: str) -> None:
        """Store region summaries (image sha256 -> (ground-truth hash, summary)) in one transaction."""
        now = time.time()
        rows = []
        for sha, (truth, summary) in summaries.items():
            plain = {**summary.to_dict(), "image_id": ""}  # the image's id is the run's, not the cache's
            payload = zlib.compress(json.dumps(plain, separators=(",", ":")).encode(), level=1)
            rows.append((fingerprint, model_id, sha, truth, pipeline, payload, _checksum(payload), now))
        self._insert_all("region_summaries", rows)

    def _insert_all(self, table: str, rows: list[tuple]) -> None:
        """Insert (or replace) `rows` into `table` in one transaction: all of them land, or none."""
        if not rows:
            return
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- maintenance ------------------------------------------------------------------------------
    def get_file(self, kind: str, key: str) -> bytes | None:
        """A small derived file stored beside the predictions (`kind`: a folder name such as "thumbnails"),
        or None when absent or unreadable; `key` must name its content (a hash of everything it is made from)."""
        try:
            return (self.directory / kind / key).read_bytes()
        except OSError:
            return None

    def put_file(self, kind: str, key: str, data: bytes) -> None:
        """Store a derived file (see `get_file`); a failed write costs the next run a recomputation, nothing more."""
        with contextlib.suppress(OSError):
            atomic_write(self.directory / kind / key, data)

    def info(self) -> dict:
        """Entries, bytes on disk (database + WAL), stored payload bytes, and the same per pipeline."""
        with self._lock:
            conn = self._connect()
            per = conn.execute(
                "SELECT pipeline, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM predictions "
                "GROUP BY pipeline ORDER BY pipeline"
            ).fetchall()
        pipelines = {name: {"entries": n, "payload_bytes": b} for name, n, b in per}
        disk = sum(p.stat().st_size for p in (Path(f"{self.path}{s}") for s in ("", "-wal", "-shm")) if p.exists())
        return {
            "path": str(self.path),
            "entries": sum(p["entries"] for p in pipelines.values()),
            "bytes": disk,
            "payload_bytes": sum(p["payload_bytes"] for p in pipelines.values()),
            "pipelines": pipelines,
        }

    def clear(self, pipeline: str | None = None) -> int:
        """Delete every entry, or one pipeline's; returns how many were removed."""
        if pipeline is None:
            return self._delete("1", ())
        return self._delete("pipeline=?", (pipeline,))

    def prune(self, older_than_s: float, pipeline: str | None = None) -> int:
        """Delete entries written more than `older_than_s` seconds ago (or one pipeline's); returns how many.

        Age counts from when an entry was written, not last read: a still-used prediction older than
        that is recomputed once, and entries no run asks for any more (old settings, old models) go.
        """
        cutoff = time.time() - older_than_s
        if pipeline is None:
            return self._delete("created < ?", (cutoff,))
        return self._delete("created < ? AND pipeline=?", (cutoff, pipeline))

    def merge_from(self, other: Path | str) -> tuple[int, int]:
        """Add the entries of the cache in folder `other` (a union: a key both hold keeps the newer entry);
        entries whose checksum fails are left out. Returns (entries taken, damaged entries skipped).

        How shards and Ray workers on a network file system share predictions, where SQLite's locking
        cannot be trusted: each writes its own cache folder, and one job merges them afterwards."""
        source = Path(other) / DB_NAME
        if not source.is_file():
            raise ConfigError("no prediction cache to merge", source)
        reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            rows = reader.execute("SELECT fingerprint, model_id, image_sha256, pipeline, payload, checksum, created "
                                  "FROM predictions").fetchall()
            try:
                region_rows = reader.execute("SELECT fingerprint, model_id, image_sha256, truth_sha256, pipeline, "
                                             "payload, checksum, created FROM region_summaries").fetchall()
            except sqlite3.OperationalError:  # a version-1 cache: no region summaries
                region_rows = []
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"cannot read the prediction cache ({e})", source) from None
        finally:
            reader.close()
        good = [r for r in rows if _checksum(r[4]) == r[5]]
        good_regions = [r for r in region_rows if _checksum(r[5]) == r[6]]
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                taken = conn.executemany(
                    "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (fingerprint, model_id, image_sha256) DO UPDATE SET pipeline=excluded.pipeline, "
                    "payload=excluded.payload, checksum=excluded.checksum, created=excluded.created "
                    "WHERE excluded.created > predictions.created", good).rowcount
                conn.executemany(
                    "INSERT INTO region_summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (fingerprint, model_id, image_sha256, truth_sha256) DO UPDATE SET "
                    "pipeline=excluded.pipeline, payload=excluded.payload, checksum=excluded.checksum, "
                    "created=excluded.created WHERE excluded.created > region_summaries.created", good_regions)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return taken, len(rows) - len(good)

    def _delete(self, where: str, params: tuple) -> int:
        with self._lock:
            conn = self._connect()
            removed = conn.execute(f"DELETE FROM predictions WHERE {where}", params).rowcount
            conn.execute(f"DELETE FROM region_summaries WHERE {where}", params)
            # give the space back; another process holding the database open just postpones it
            try:
                conn.execute("VACUUM")  # in WAL mode this writes the compacted pages to the WAL...
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # ...and this moves them into the file
            except sqlite3.OperationalError:
                pass
        return removed

SAMPLES_FOLDER, THUMBNAILS_FOLDER = "samples", "thumbnails"  # derived files beside the database, named by content


def clear_derived_files(directory: Path) -> int:
    """Delete the derived files kept beside a cache's database (generated samples, thumbnails); returns how many.
    They hold nothing a run cannot remake, so `fmtest cache clear` takes them with the predictions."""
    removed = 0
    for folder in (Path(directory) / SAMPLES_FOLDER, Path(directory) / THUMBNAILS_FOLDER):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        with contextlib.suppress(OSError):
            folder.rmdir()
    return removed
