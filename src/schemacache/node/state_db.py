"""The node's state file: one SQLite database (WAL) per node.

Tables: ``desired`` (newest version received per key, or a tombstone),
``applied`` (version the handler last applied, full resource, where it is
not the durable desired version: see :mod:`.nodestate`), ``failures``
(keys whose retries were exhausted) and ``meta`` (received revision, registry
cluster id, format marker).

:class:`StateFile` opens (or creates) the file, loads it, moves a corrupt or
foreign one aside, and commits one batch of writes per transaction.  Every
method blocks: the buffered :class:`~schemacache.node.state.StateStore` calls
them in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._gc import gc_paused
from .._sqlite import enable_wal
from ..stored import StoredResource
from .dirlock import DirLock
from .failures import FailureRecord

log = logging.getLogger(__name__)

STATE_FILE = "state.db"
FORMAT_MARKER = "schemacache-node-state/1"
STATE_BUSY_TIMEOUT = 10.0
"""Seconds to wait for a lock on the state file before giving up."""
STATE_CACHE_KIB = 512
"""SQLite page cache of the state file, in KiB (SQLite's default is 2 MiB).  The
file is written in batches and read once, at start-up; the operating system
caches it anyway, and the default cache was a sixth of a node's memory at
10,000 resources."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS desired (
    key TEXT PRIMARY KEY, revision INTEGER NOT NULL, deleted INTEGER NOT NULL,
    resource TEXT NOT NULL, live INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY, revision INTEGER NOT NULL, resource TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY, revision INTEGER NOT NULL, attempts INTEGER NOT NULL,
    first_failed REAL NOT NULL, last_failed REAL NOT NULL, last_error TEXT NOT NULL);
"""


class StateError(Exception):
    """The state file is unreadable or belongs to something else."""


_RESOURCE_FIELDS = "json_extract(resource, '$.metadata.mod_revision')"
"""What loading reads of a stored resource besides its text (malformed JSON
makes SQLite raise, which moves the file aside)."""
_RESOURCE_START = '{"kind":"'
"""How every resource text this store writes starts (``Resource.to_json``)."""
_SHARED = "d.revision IS a.revision AND d.deleted = 0"
"""An applied row whose version is its key's desired version."""
_APPLIED_QUERY = (
    f"SELECT a.key, a.revision, CASE WHEN {_SHARED} THEN NULL ELSE a.resource END, "
    f"CASE WHEN {_SHARED} THEN NULL ELSE "
    f"{_RESOURCE_FIELDS.replace('resource', 'a.resource')} END "
    "FROM applied a LEFT JOIN desired d ON d.key = a.key")
"""Every applied row in one pass: key, revision, and text and revision of its
resource (both ``NULL`` where the desired row holds the same version)."""


def _record(key: str, text: Any, mod_revision: Any) -> StoredResource:
    if not (isinstance(text, str) and isinstance(mod_revision, int)
            and text.startswith(_RESOURCE_START) and '"name":"' in text):
        raise StateError(f"the stored resource of {key!r} is not a resource")
    return StoredResource(text, mod_revision)


@dataclass
class LoadedState:
    """What :meth:`StateFile.open` found on disk.

    ``fresh`` is True when there was no usable state (new node, or a corrupt
    file moved aside): the node must sync from a full listing.
    """

    fresh: bool = True
    received_revision: int = 0
    received_mark: str = ""
    """The change mark of the change received at ``received_revision`` ("": unknown)."""
    cluster_id: str | None = None
    rewound: str | None = None
    """The summary of a registry rewind the node had not converged after."""
    desired: dict[str, tuple[int, bool, StoredResource]] = field(default_factory=dict)
    applied: dict[str, tuple[int, StoredResource]] = field(default_factory=dict)
    failures: dict[str, FailureRecord] = field(default_factory=dict)
    moved_aside: str | None = None


DesiredRow = tuple[int, bool, StoredResource, bool] | None
"""A buffered desired write: ``(revision, deleted, record, live)``; ``None`` deletes the row."""
AppliedRow = tuple[int, StoredResource] | None
"""A buffered applied write: ``(revision, record)``; ``None`` deletes the row."""
Batch = tuple[dict[str, DesiredRow], dict[str, AppliedRow], dict[str, FailureRecord | None],
              dict[str, str]]
"""One transaction's writes: desired, applied and failure rows by key (``None``
deletes), and meta values by name."""
_V = TypeVar("_V")


def _split(writes: dict[str, _V | None], row: Callable[[str, _V], tuple[Any, ...]]
           ) -> tuple[list[tuple[Any, ...]], list[tuple[str]]]:
    """``writes`` as the rows to insert (``row(key, value)``) and the keys to
    delete (those written as ``None``)."""
    puts: list[tuple[Any, ...]] = []
    deletes: list[tuple[str]] = []
    for key, value in writes.items():
        if value is None:
            deletes.append((key,))
        else:
            puts.append(row(key, value))
    return puts, deletes


class StateFile:
    """The SQLite file ``state_dir/state.db``, locked for one process.

    :param state_dir: directory of the state file (created if missing).
    """

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self._lock = DirLock(self.dir)
        self.conn: sqlite3.Connection | None = None

    # --- open / close -------------------------------------------------------

    def open(self) -> LoadedState:
        """Lock the directory, open (or create) the file and load it; a corrupt
        or foreign file is moved aside and an empty state returned."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            return self._load_or_create()
        except BaseException:
            self._close_conn()
            self._lock.release()
            raise

    def close(self) -> None:
        """Close the file and let go of the directory."""
        try:
            self._close_conn()
        finally:
            self._lock.release()

    def _load_or_create(self) -> LoadedState:
        moved: str | None = None
        if self.path.exists():
            try:
                with gc_paused():
                    loaded = self._load_existing()
                if loaded is not None:
                    return loaded
            except (sqlite3.DatabaseError, StateError, ValueError, KeyError,
                    TypeError) as exc:
                self._close_conn()
                moved = self._move_aside(exc)
        self.conn = self._connect()
        with self.conn:
            self.conn.executescript(_SCHEMA)
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)",
                              (FORMAT_MARKER,))
        return LoadedState(fresh=True, moved_aside=moved)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=STATE_BUSY_TIMEOUT)
        enable_wal(conn, STATE_BUSY_TIMEOUT)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{STATE_CACHE_KIB}")
        return conn

    def _load_existing(self) -> LoadedState | None:
        """Load the file; ``None`` when it is an empty database (treated as new)."""
        conn = self._connect()
        self.conn = conn
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise StateError(f"not a schemacache node state file (tables: {sorted(tables)})")
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("format") != FORMAT_MARKER:
            raise StateError(f"unknown state format {meta.get('format')!r}")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise StateError(f"integrity check failed: {check}")
        conn.executescript(_SCHEMA)
        loaded = LoadedState(fresh="received_revision" not in meta)
        loaded.received_revision = int(meta.get("received_revision", "0"))
        loaded.received_mark = meta.get("received_mark", "")
        loaded.cluster_id = meta.get("cluster_id")
        loaded.rewound = meta.get("rewound") or None
        # Resources stay text (models are built when asked for); SQLite checks
        # each is a resource's JSON and reads its revision without a decode.
        for key, rev, deleted, text, mod in conn.execute(
                f"SELECT key, revision, deleted, resource, {_RESOURCE_FIELDS} FROM desired"):
            loaded.desired[key] = (int(rev), bool(deleted), _record(key, text, mod))
        # Most applied versions are the desired ones: share the record, and read
        # (and check) the text of the others only.
        for key, rev, text, mod in conn.execute(_APPLIED_QUERY):
            if text is None:
                loaded.applied[key] = (int(rev), loaded.desired[key][2])
            else:
                loaded.applied[key] = (int(rev), _record(key, text, mod))
        for key, rev, attempts, first, last, err in conn.execute(
                "SELECT key, revision, attempts, first_failed, last_failed, last_error "
                "FROM failures"):
            loaded.failures[key] = FailureRecord(key, int(rev), int(attempts), float(first),
                                                 float(last), str(err))
        return loaded

    def _move_aside(self, exc: BaseException) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        target = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        log.error("node state %s is unreadable (%s: %s); moved it to %s and rebuilding from "
                  "the registry", self.path, type(exc).__name__, exc, target)
        return str(target)

    def _close_conn(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None

    # --- commit -------------------------------------------------------------

    def commit(self, desired: dict[str, DesiredRow], applied: dict[str, AppliedRow],
               failures: dict[str, FailureRecord | None], meta: dict[str, str]) -> None:
        """Write one batch (see :data:`Batch`) in one transaction; on an error
        nothing of it is written."""
        conn = self.conn
        if conn is None:
            raise StateError("state file is closed")
        d_put, d_del = _split(desired, lambda k, dv: (k, dv[0], int(dv[1]), dv[2].text,
                                                       int(dv[3])))
        a_put, a_del = _split(applied, lambda k, av: (k, av[0], av[1].text))
        f_put, f_del = _split(failures, lambda k, fv: (k, fv.revision, fv.attempts,
                                                       fv.first_failed, fv.last_failed,
                                                       fv.last_error))
        statements = (
            ("INSERT OR REPLACE INTO desired VALUES (?,?,?,?,?)", d_put),
            ("DELETE FROM desired WHERE key=?", d_del),
            ("INSERT OR REPLACE INTO applied VALUES (?,?,?)", a_put),
            ("DELETE FROM applied WHERE key=?", a_del),
            ("INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?,?)", f_put),
            ("DELETE FROM failures WHERE key=?", f_del),
            ("INSERT OR REPLACE INTO meta VALUES (?,?)", list(meta.items())),
        )
        conn.execute("BEGIN")
        try:
            for sql, rows in statements:
                if rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (disk full does): keep its error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
