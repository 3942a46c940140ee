"""Reading the SQLite registry's resource rows many keys at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from ..model import Resource
from .sqlite_changes import decode

LOOKUP_BATCH = 500
"""Keys read in one query (SQLite allows 32,766 parameters)."""


def preloaded(conn: sqlite3.Connection, resources: Sequence[Resource],
              lookup: Callable[[str], Resource | None]) -> Callable[[str], Resource | None]:
    """``lookup``, with the stored versions of ``resources``' keys read up
    front, :data:`LOOKUP_BATCH` keys per query: an apply looks up every key it
    writes, and one query per key is most of the time it spends reading."""
    keys = [resource.key for resource in resources]
    values: dict[str, str | None] = dict.fromkeys(keys)
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start:start + LOOKUP_BATCH]
        marks = ",".join("?" * len(batch))
        values.update(conn.execute(
            f"SELECT key, value FROM resources WHERE key IN ({marks})", batch))

    def read(key: str) -> Resource | None:
        if key not in values:
            return lookup(key)
        value = values[key]
        return None if value is None else decode(value)

    return read
