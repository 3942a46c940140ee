"""The SQLite registry's readers: their connections, and resources read by
key or key prefix, decoded or as stored.

Free functions (run on a reader thread of
:class:`~schemacache.registry.sqlite_conn.SqliteConnections`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from .._gc import gc_paused
from ..model import Resource
from ..stored import StoredResource
from .sqlite_changes import decode, read_meta

READER_CACHE_KIB = 512
"""Page cache of each reader connection, in KiB (SQLite's default is 2 MiB).
Readers stream listings and the tail of the change log, each page read about
once, and the operating system caches the file anyway; the default cache was
a fifth of a node's memory at 10,000 resources."""


def open_reader(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection for a reader thread: waits ``busy_timeout`` seconds for a
    lock and keeps :data:`READER_CACHE_KIB` of pages."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    return conn


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """The key range ``[low, high)`` holding exactly the keys starting with ``prefix``.

    SQLite compares TEXT bytewise (UTF-8), which orders like code points, so the
    prefix with its last character incremented bounds the range from above.
    ``high`` is ``None`` when there is no such bound (empty prefix, or a last
    character without a successor); callers then filter in Python.
    """
    if not prefix:
        return "", None
    last = ord(prefix[-1]) + 1
    if last > 0x10FFFF or 0xD800 <= last <= 0xDFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(last)


def get_value(conn: sqlite3.Connection, key: str) -> str | None:
    """The stored JSON of ``key`` (``None``: no such resource)."""
    row = conn.execute("SELECT value FROM resources WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def values_under(conn: sqlite3.Connection, prefix: str) -> Iterable[str]:
    """The stored JSON of every resource under ``prefix``, by key, lazily."""
    low, high = prefix_bounds(prefix)
    if high is None:
        rows = conn.execute(
            "SELECT key, value FROM resources WHERE key >= ? ORDER BY key", (low,)
        )
        return (value for key, value in rows if key.startswith(prefix))
    rows = conn.execute(
        "SELECT value FROM resources WHERE key >= ? AND key < ? ORDER BY key", (low, high)
    )
    return (value for (value,) in rows)


def read_resources(conn: sqlite3.Connection, prefix: str) -> tuple[list[Resource], int]:
    """Every resource under ``prefix``, sorted by key, and the revision of that
    snapshot (one read transaction)."""
    with gc_paused():
        conn.execute("BEGIN")
        try:
            revision = read_meta(conn)[1]
            values = list(values_under(conn, prefix))
        finally:
            conn.execute("COMMIT")
        return [decode(v) for v in values], revision


def read_stored(conn: sqlite3.Connection,
                prefix: str) -> tuple[list[tuple[str, StoredResource]], int]:
    """Every resource under ``prefix`` as ``(key, record)``, sorted by key, and
    the revision of that snapshot (one read transaction).  The stored values
    are the resources' JSON: handed out as they are, never decoded."""
    low, high = prefix_bounds(prefix)
    conn.execute("BEGIN")
    try:
        revision = read_meta(conn)[1]
        rows = conn.execute(
            "SELECT key, value, mod_revision FROM resources WHERE key >= ? "
            + ("ORDER BY key" if high is None else "AND key < ? ORDER BY key"),
            (low,) if high is None else (low, high))
        return [(key, StoredResource(value, mod)) for key, value, mod in rows
                if key.startswith(prefix)], revision
    finally:
        conn.execute("COMMIT")
