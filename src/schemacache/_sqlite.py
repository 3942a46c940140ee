"""SQLite connection helpers shared by the registry store and the node state."""

from __future__ import annotations

import sqlite3
import time

#: First pause, in seconds, between attempts to switch a file to WAL mode.
WAL_RETRY_FIRST_PAUSE = 0.005

#: Longest pause, in seconds, between those attempts.
WAL_RETRY_MAX_PAUSE = 0.1


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch ``conn``'s database to WAL journaling and return the mode in force.

    SQLite answers ``PRAGMA journal_mode = WAL`` with "database is locked"
    without consulting the busy handler when another process is creating or
    converting the same file at that moment, so two processes opening a new
    store together would fail at random.  The switch is therefore retried,
    with growing pauses, until it succeeds or ``timeout`` seconds pass.

    :param conn: an open connection.
    :param timeout: seconds to keep retrying before the last error is raised.
    """
    deadline = time.monotonic() + timeout
    pause = WAL_RETRY_FIRST_PAUSE
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, WAL_RETRY_MAX_PAUSE)
