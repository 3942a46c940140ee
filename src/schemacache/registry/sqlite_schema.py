"""The SQLite registry's file: its layout, opening it for writing, and the
write transaction every change runs in.

Free functions over one connection (run on the writer's thread of
:class:`~schemacache.registry.sqlite_conn.SqliteConnections`).  The writer's
connection is in WAL mode with ``synchronous=FULL`` (see
:mod:`schemacache.registry.sqlite` for why); opening it creates the store, or
checks that the file holds one of :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from .._sqlite import enable_wal
from ..errors import SchemaCacheError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "SqliteStoreError",
    "ensure_schema",
    "open_writer",
    "write_transaction",
]

DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's write lock before failing."""

SCHEMA_VERSION = 1
"""Layout version stored in ``PRAGMA user_version``; another value is refused."""

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cluster_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL
);
CREATE TABLE resources (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    grp TEXT,
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('PUT', 'DELETE')),
    resource TEXT NOT NULL
);
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    admin_url TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

_TABLES = frozenset({"meta", "resources", "changes", "nodes"})


class SqliteStoreError(SchemaCacheError):
    """The SQLite file cannot serve as a registry (not a database, another layout, …).

    :param path: the file.
    :param reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"sqlite registry {path}: {reason}")


def write_transaction(conn: sqlite3.Connection, body: Callable[[], _T]) -> _T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def open_writer(path: str) -> sqlite3.Connection:
    """The writer's connection to the store at ``path`` (an absolute path):
    parent directories, WAL mode and the schema are set up on the way.

    :raises SqliteStoreError: the file cannot serve as a registry.
    """
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise SqliteStoreError(path, f"cannot create directory {parent}: {exc}") from exc
    if os.path.isdir(path):
        raise SqliteStoreError(path, "is a directory")
    # isolation_level=None: transactions are opened explicitly.
    conn = sqlite3.connect(path, timeout=DEFAULT_BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(DEFAULT_BUSY_TIMEOUT * 1000)}")
        mode = enable_wal(conn, DEFAULT_BUSY_TIMEOUT)
        if mode != "wal":
            raise SqliteStoreError(path, f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        ensure_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the store in an empty file, or check the layout of an existing one.

    :param conn: the writer's connection.
    :param path: the file, named by the error.
    :raises SqliteStoreError: the file holds another layout.
    """
    def body() -> None:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not tables:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (id, cluster_id, revision, compact_revision) "
                "VALUES (1, ?, 0, 0)",
                (secrets.token_hex(8),),
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION or not _TABLES <= tables:
            raise SqliteStoreError(
                path,
                f"holds another layout (user_version {version}, tables "
                f"{', '.join(sorted(tables))}); expected a schemacache registry "
                f"of layout {SCHEMA_VERSION}",
            )
        elif conn.execute("SELECT count(*) FROM meta").fetchone()[0] != 1:
            raise SqliteStoreError(path, "the meta table must hold exactly one row")

    write_transaction(conn, body)
