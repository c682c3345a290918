"""open_wal: a store being set up by another process is waited for, not reported as an error."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from fmtest.util.sqlite_wal import open_wal


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")


def test_opens_in_wal_mode_and_runs_setup(tmp_path):
    conn = open_wal(tmp_path / "s.sqlite", _create, timeout_s=1)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_waits_while_another_connection_holds_the_new_file(tmp_path):
    path = tmp_path / "s.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # like a second xdist worker in the middle of creating the schema
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    conn = open_wal(path, _create, timeout_s=0.05)  # far shorter than the lock: only the retry can succeed
    release.join()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_other_errors_are_not_retried(tmp_path):
    def broken(conn):
        conn.execute("SELECT * FROM missing_table")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        open_wal(tmp_path / "s.sqlite", broken, timeout_s=1)
