"""Reading the SQLite registry's change log: what its watchers see.

Free functions over one open connection (run on a reader thread of
:class:`~schemacache.registry.sqlite.SqliteRegistry`): the meta row, the
change mark of one revision, and one batch of changes with the checks that
make a watch fail rather than read on in another history (compacted away,
rewound below its cursor, or rewound and written past it).
"""

from __future__ import annotations

import sqlite3

import pydantic_core

from .._gc import gc_paused
from ..errors import CompactedError, RegistryRewoundError
from ..model import Event, EventType, Resource
from .history import change_mark, event_mark

WATCH_BATCH = 500
"""Change rows read per watch step.  A watch reads the next batch while its
consumer takes the last one, and smaller batches keep both sides busy sooner
(500 caught up a little faster than 1,000 or 2,000, no slower than 250)."""

# A dict lookup: calling the enum by value costs more than the rest of an event.
_EVENT_TYPES = {t.value: t for t in EventType}


def decode(value: str, share_strings: bool = True) -> Resource:
    """A stored resource from its JSON text.

    :param share_strings: make every repeated string one object (default
        ``True``: a listing's resources live long, and share their field
        names, types and groups); a watched change's model lives only until
        its key settles, and sharing only the field names parses it faster
        (3.4 µs instead of 4.4 µs for a measure; sharing nothing is the
        slowest: each field name is then a new string hashed on insert).
    """
    # pydantic-core's parser is about twice as fast as json.loads here (every
    # listing and watch batch decodes through it).
    return Resource.from_stored(pydantic_core.from_json(
        value, cache_strings="all" if share_strings else "keys"))


def read_meta(conn: sqlite3.Connection) -> tuple[str, int, int]:
    """``(cluster_id, revision, compact_revision)`` of the store."""
    row = conn.execute(
        "SELECT cluster_id, revision, compact_revision FROM meta WHERE id = 1"
    ).fetchone()
    return str(row[0]), int(row[1]), int(row[2])


def mark_at(conn: sqlite3.Connection, revision: int) -> str | None:
    """The change mark of revision ``revision`` (``None``: compacted away)."""
    row = conn.execute("SELECT key, type, resource FROM changes WHERE revision = ?",
                       (revision,)).fetchone()
    return None if row is None else change_mark(row[1], row[0], decode(row[2]))


def read_changes(
    conn: sqlite3.Connection, prefix: str, next_rev: int, last_mark: str | None = None
) -> tuple[list[Event], int, str | None]:
    """Events under ``prefix`` from ``next_rev`` on (one batch), the revision to
    read next and the mark of the last change read.

    :param last_mark: the mark of the change at ``next_rev - 1`` as the caller
        read it (default ``None``: not known); a different mark there now
        raises :class:`RegistryRewoundError` (``diverged``).
    :raises CompactedError: ``next_rev`` was compacted away.
    :raises RegistryRewoundError: the registry is below ``next_rev - 1``.
    """
    conn.execute("BEGIN")
    try:
        _, revision, compact_revision = read_meta(conn)
        if next_rev < compact_revision:
            raise CompactedError(compact_revision, next_rev)
        if revision < next_rev - 1:
            # A backup was restored under this watch: its history is not ours.
            raise RegistryRewoundError(revision, next_rev - 1)
        if last_mark and mark_at(conn, next_rev - 1) not in (None, last_mark):
            # Restored and written past the cursor since the last read.
            raise RegistryRewoundError(revision, next_rev - 1, diverged=True)
        rows = conn.execute(
            "SELECT revision, key, type, resource FROM changes WHERE revision >= ? "
            "ORDER BY revision LIMIT ?",
            (next_rev, WATCH_BATCH),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    with gc_paused():
        events = [
            Event.from_stored(_EVENT_TYPES[kind], key, rev, decode(value, False), value)
            for rev, key, kind, value in rows
            if key.startswith(prefix)
        ]
    if rows:
        rev, key, kind, value = rows[-1]
        next_rev = int(rev) + 1
        last = events[-1] if events and events[-1].revision == rev else None
        last_mark = event_mark(last) if last is not None else change_mark(kind, key,
                                                                         decode(value))
    return events, next_rev, last_mark
