"""Opening the project's SQLite stores (prediction cache, LVLM request record) safely from many
processes at once: WAL mode, a generous busy timeout, and a retry while the file is first set up.

SQLite does not wait on its busy handler while a brand-new file is switched to WAL or its schema is
created by a concurrent connection: several pytest-xdist workers starting together can see
"database is locked" once. That is worth retrying, never worth failing a run for.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

SETUP_RETRY_S = 60.0


def open_wal(path: Path, setup: Callable[[sqlite3.Connection], None], *, timeout_s: float,
             **connect_kwargs) -> sqlite3.Connection:
    """A connection in WAL mode on which `setup` (schema creation) has run, retried while locked."""
    deadline = time.monotonic() + SETUP_RETRY_S
    delay = 0.01
    while True:
        conn = sqlite3.connect(path, timeout=timeout_s, **connect_kwargs)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            setup(conn)
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except BaseException:
            conn.close()
            raise
