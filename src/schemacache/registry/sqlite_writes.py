"""The SQLite registry's writes: put, delete, cascade delete, apply, compaction.

Free functions over the writer's connection (run on the writer's thread of
:class:`~schemacache.registry.sqlite_conn.SqliteConnections`).  Each write is
one ``BEGIN IMMEDIATE`` transaction: the CAS check, the reference checks
against the transaction's snapshot, the revision bump (compacting what falls
out of the ``history`` revisions kept), the resource rows and the change rows
commit together or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence

from .._gc import gc_paused
from ..errors import ConflictError, NotFoundError
from ..model import Resource
from .rules import (
    ApplyResult,
    candidate_prefixes_closure,
    cascade_plan,
    check_group_update,
    check_references,
    dependent_candidates_prefixes,
    plan_apply,
    refuse_if_referenced,
)
from .sqlite_changes import decode, read_meta
from .sqlite_listing import get_value, values_under
from .sqlite_rows import preloaded
from .sqlite_schema import write_transaction

__all__ = [
    "apply_resources",
    "cascade_delete",
    "compact_log",
    "delete_resource",
    "next_revisions",
    "put_resource",
]


# --- reads for the rules ------------------------------------------------------------


def _iter_candidates(conn: sqlite3.Connection, key: str) -> Iterator[Resource]:
    """The resources under the prefixes where dependents of ``key`` can live, lazily."""
    for prefix in dependent_candidates_prefixes(key):
        for value in values_under(conn, prefix):
            yield decode(value)


def _transitive_candidates(conn: sqlite3.Connection, key: str) -> list[Resource]:
    """Every resource that may reference ``key`` directly or through others
    (each candidate prefix read once)."""
    return [decode(value) for prefix in candidate_prefixes_closure(key)
            for value in values_under(conn, prefix)]


def _lookup(conn: sqlite3.Connection) -> Callable[[str], Resource | None]:
    def lookup(key: str) -> Resource | None:
        value = get_value(conn, key)
        return None if value is None else decode(value)

    return lookup


def _current(conn: sqlite3.Connection, key: str) -> tuple[str, int] | None:
    row = conn.execute(
        "SELECT value, mod_revision FROM resources WHERE key = ?", (key,)
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _check_expected(key: str, actual: int, expected: int | None) -> None:
    if expected is not None and actual != expected:
        raise ConflictError(key, expected, actual)


def _existing(conn: sqlite3.Connection, key: str, expected_revision: int | None) -> tuple[str, int]:
    """The stored value and mod_revision of ``key``, which must exist and
    match ``expected_revision`` (``None``: any) for a delete to go ahead."""
    row = _current(conn, key)
    if row is None:
        if expected_revision is None:
            raise NotFoundError(key)
        raise ConflictError(key, expected_revision, 0)
    _check_expected(key, row[1], expected_revision)
    return row


# --- revisions and rows -------------------------------------------------------------


def next_revisions(conn: sqlite3.Connection, history: int, count: int = 1) -> int:
    """Take ``count`` revisions (default one), compacting what falls out of the
    ``history`` revisions kept; returns the first."""
    _, revision, compact_revision = read_meta(conn)
    last = revision + count
    oldest = last - history + 1
    if oldest > compact_revision:
        conn.execute("DELETE FROM changes WHERE revision < ?", (oldest,))
        conn.execute(
            "UPDATE meta SET revision = ?, compact_revision = ? WHERE id = 1", (last, oldest)
        )
    else:
        conn.execute("UPDATE meta SET revision = ? WHERE id = 1", (last,))
    return revision + 1


def _store(conn: sqlite3.Connection, history: int, resource: Resource,
           current: Resource | None) -> int:
    """Write one version (resource row and change row) at the next revision."""
    rev = next_revisions(conn, history)
    stored = resource.with_revisions(current.create_revision if current else rev, rev)
    value = stored.to_json()
    conn.execute(
        "INSERT OR REPLACE INTO resources "
        "(key, kind, grp, value, create_revision, mod_revision) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (resource.key, stored.kind, stored.group, value, stored.create_revision, rev),
    )
    conn.execute(
        "INSERT INTO changes (revision, key, type, resource) VALUES (?, ?, 'PUT', ?)",
        (rev, resource.key, value),
    )
    return rev


def _remove(conn: sqlite3.Connection, history: int, key: str, value: str) -> int:
    rev = next_revisions(conn, history)
    conn.execute("DELETE FROM resources WHERE key = ?", (key,))
    conn.execute(
        "INSERT INTO changes (revision, key, type, resource) VALUES (?, ?, 'DELETE', ?)",
        (rev, key, value),
    )
    return rev


# --- the writes ---------------------------------------------------------------------


def put_resource(conn: sqlite3.Connection, history: int, resource: Resource,
                 expected_revision: int | None) -> int:
    """Write ``resource`` if its key is at ``expected_revision`` (``None``: any,
    ``0``: absent) and the rules allow it; returns the new revision.

    :param history: revisions of change history kept.
    """
    key = resource.key

    def body() -> int:
        row = _current(conn, key)
        _check_expected(key, row[1] if row else 0, expected_revision)
        current = decode(row[0]) if row else None
        check_references(resource, _lookup(conn))
        # Lazily: one member is enough to refuse a catalog change.
        check_group_update(resource, current, lambda: _iter_candidates(conn, key))
        return _store(conn, history, resource, current)

    return write_transaction(conn, body)


def delete_resource(conn: sqlite3.Connection, history: int, key: str,
                    expected_revision: int | None) -> int:
    """Delete ``key`` (at ``expected_revision``; ``None``: any) unless something
    references it; returns the revision of the delete.

    :param history: revisions of change history kept.
    """
    def body() -> int:
        row = _existing(conn, key, expected_revision)
        refuse_if_referenced(key, list(_iter_candidates(conn, key)))
        return _remove(conn, history, key, row[0])

    return write_transaction(conn, body)


def cascade_delete(conn: sqlite3.Connection, history: int, key: str,
                   expected_revision: int | None) -> int:
    """Delete ``key`` after everything that depends on it, in one transaction.

    Each dependent's delete is a write (a revision) of its own, in dependency
    order, as on every backend; sharing one transaction means that no reader
    sees part of a cascade and a crash or an error part-way deletes nothing.

    :param history: revisions of change history kept.
    """
    def body() -> int:
        row = _existing(conn, key, expected_revision)
        for dep in cascade_plan(key, _transitive_candidates(conn, key)):
            current = _current(conn, dep.key)
            if current is not None:
                _remove(conn, history, dep.key, current[0])
        return _remove(conn, history, key, row[0])

    return write_transaction(conn, body)


def apply_resources(conn: sqlite3.Connection, history: int,
                    resources: Sequence[Resource]) -> list[ApplyResult]:
    """Check every rule against the transaction's snapshot, then write: all or nothing.

    :param history: revisions of change history kept.
    """
    def body() -> list[ApplyResult]:
        with gc_paused():
            steps = plan_apply(resources, preloaded(conn, resources, _lookup(conn)),
                               lambda key: _iter_candidates(conn, key))
            writes = [step for step in steps if step.changed]
            # One revision each, taken together; rows written in two batches.
            rev = next_revisions(conn, history, len(writes)) if writes else 0
            revisions: dict[str, int] = {}
            rows = []
            for step in writes:
                stored = step.resource.with_revisions(
                    step.current.create_revision if step.current else rev, rev)
                rows.append((step.key, stored.kind, stored.group, stored.to_json(),
                             stored.create_revision, rev))
                revisions[step.key] = rev
                rev += 1
            conn.executemany(
                "INSERT OR REPLACE INTO resources "
                "(key, kind, grp, value, create_revision, mod_revision) "
                "VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO changes (revision, key, type, resource) VALUES (?, ?, 'PUT', ?)",
                [(row[5], row[0], row[3]) for row in rows])
            return [ApplyResult(step.key, step.outcome,
                                revisions.get(step.key, step.current_revision))
                    for step in steps]

    return write_transaction(conn, body)


def compact_log(conn: sqlite3.Connection, revision: int) -> None:
    """Drop the change log below ``revision`` (at most the current revision)."""
    def body() -> None:
        _, current, compact_revision = read_meta(conn)
        target = min(revision, current)
        if target <= compact_revision:
            return
        conn.execute("DELETE FROM changes WHERE revision < ?", (target,))
        conn.execute("UPDATE meta SET compact_revision = ? WHERE id = 1", (target,))

    write_transaction(conn, body)
