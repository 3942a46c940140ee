"""The node's durable state: one SQLite file (WAL) per node.

Tables: ``desired`` (newest version received per key, or a tombstone),
``applied`` (version the handler last applied, full resource), ``failures``
(keys whose retries were exhausted) and ``meta`` (received revision, registry
cluster id, format marker).

Writes are buffered and committed in batches by a background flusher, so the
cost of a transaction is shared by many events.  Buffered writes to one key
collapse to the newest.  The received revision is written in the same
transaction as the desired state it covers, so a restart never skips an event.

The desired table is also the node's write-ahead record: a handler is handed
no version before its desired row is durable (see :meth:`StateStore.desired_durable`),
so after a crash the durable desired version is never older than anything the
handler was handed.  A handler call waiting for its row cuts the timer short
(:meth:`StateStore.request_commit`): the flusher then commits at once, the next
commit starting as soon as the previous one ended and taking everything
pending (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._gc import gc_paused
from .._sqlite import enable_wal
from ..model import Event
from ..registry.history import event_mark
from ..stored import StoredResource
from .dirlock import DirLock
from .failures import FailureRecord

log = logging.getLogger(__name__)

STATE_FILE = "state.db"
FORMAT_MARKER = "schemacache-node-state/1"
FLUSH_INTERVAL = 0.025
"""Seconds between commits while writes are pending.  Handler calls never wait
for a commit, so this bounds only how much progress a crash can lose (it is
re-received and re-applied after the restart); at live rates a shorter interval
means one transaction and one thread hop per event, which five nodes on two
cores pay for in propagation delay."""
FLUSH_RETRY_DELAY = 1.0
"""Seconds between commit attempts while the state file cannot be written."""
FLUSH_BATCH = 5000
"""Pending writes that trigger a commit before :data:`FLUSH_INTERVAL` ran out."""
MAX_PENDING_WRITES = 50_000
"""Pending writes beyond which producers wait for the flusher (backpressure)."""
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


def _record(key: str, text: Any, mod_revision: Any) -> StoredResource:
    if not (isinstance(text, str) and isinstance(mod_revision, int)
            and text.startswith(_RESOURCE_START) and '"name":"' in text):
        raise StateError(f"the stored resource of {key!r} is not a resource")
    return StoredResource(text, mod_revision)


@dataclass
class LoadedState:
    """What :meth:`StateStore.open` found on disk.

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


_Desired = tuple[int, bool, StoredResource, bool] | None
_Applied = tuple[int, StoredResource] | None


_Batch = tuple[dict[str, _Desired], dict[str, _Applied], dict[str, FailureRecord | None],
               dict[str, str]]


class StateStore:
    """Durable per-node state in ``state_dir/state.db``.

    :param state_dir: directory of the state file (created if missing).
    :param flush_interval: seconds between batched commits (default
        :data:`FLUSH_INTERVAL`).
    :param flush_batch: pending writes that trigger an early commit (default
        :data:`FLUSH_BATCH`).
    """

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 flush_interval: float = FLUSH_INTERVAL, flush_batch: int = FLUSH_BATCH):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self._lock = DirLock(self.dir)
        self._flush_interval = flush_interval
        self._flush_batch = flush_batch
        self._conn: sqlite3.Connection | None = None
        self._desired: dict[str, _Desired] = {}
        self._applied: dict[str, _Applied] = {}
        self._failures: dict[str, FailureRecord | None] = {}
        self._meta: dict[str, str] = {}
        self._received_event: Event | None = None
        self._durable_desired: dict[str, int] = {}
        self.on_desired_committed: Callable[[Iterable[str]], None] | None = None
        """Called (on the event loop) with the keys whose desired rows a commit wrote."""
        self._urgent = asyncio.Event()
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self.commits = 0

    # --- open / close -------------------------------------------------------

    async def open(self) -> LoadedState:
        """Open (or create) the state file and load it; a corrupt or foreign
        file is moved aside and an empty state returned."""
        loaded = await asyncio.to_thread(self._open_sync)
        self._task = asyncio.create_task(self._flush_loop(), name="state-flusher")
        return loaded

    def _open_sync(self) -> LoadedState:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            return self._load_or_create()
        except BaseException:
            self._close_conn()
            self._lock.release()
            raise

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
        self._conn = self._connect()
        with self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)",
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
        self._conn = conn
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
            self._durable_desired[key] = int(rev)
        # Most applied versions are the desired ones: share the record.
        for key, rev, text, mod in conn.execute(
                "SELECT a.key, a.revision, a.resource, " + _RESOURCE_FIELDS.replace(
                    "resource", "a.resource") + " FROM applied a LEFT JOIN desired d "
                "ON d.key = a.key WHERE d.revision IS NOT a.revision OR d.deleted != 0"):
            loaded.applied[key] = (int(rev), _record(key, text, mod))
        for key, rev in conn.execute(
                "SELECT a.key, a.revision FROM applied a JOIN desired d ON d.key = a.key "
                "WHERE d.revision = a.revision AND d.deleted = 0"):
            loaded.applied[key] = (int(rev), loaded.desired[key][2])
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
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        """Commit everything pending and close the file."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            if self._pending():
                await asyncio.to_thread(self._commit, *self._take())
        except Exception as exc:
            log.error("node state: the last commit to %s failed (%s); the node will catch up "
                      "from its last durable revision", self.path, exc)
        finally:
            await asyncio.to_thread(self._close_conn)
            self._lock.release()

    # --- buffered writes ----------------------------------------------------

    def put_desired(self, key: str, revision: int, deleted: bool, stored: StoredResource,
                    live: bool = False) -> None:
        """Record the desired version of ``key``.

        :param live: it came from the watch (not from a listing; default ``False``).
        """
        self._desired[key] = (revision, deleted, stored, live)
        # Not durable until this row is committed (a reset or rewind can reuse
        # the revision number of the row on disk for another version).
        self._durable_desired.pop(key, None)
        self._poke()

    def delete_desired(self, key: str) -> None:
        self._desired[key] = None
        self._poke()

    def put_applied(self, key: str, revision: int, stored: StoredResource) -> None:
        self._applied[key] = (revision, stored)
        self._poke()

    def delete_applied(self, key: str) -> None:
        self._applied[key] = None
        self._poke()

    def put_failure(self, record: FailureRecord) -> None:
        self._failures[record.key] = FailureRecord(**record.__dict__)
        self._poke()

    def delete_failure(self, key: str) -> None:
        self._failures[key] = None
        self._poke()

    def desired_durable(self, key: str, revision: int) -> bool:
        """Whether the desired row of ``key`` at ``revision`` is committed."""
        return self._durable_desired.get(key) == revision

    def request_commit(self) -> None:
        """A handler call waits for a commit: commit what is pending now."""
        self._urgent.set()
        self._poke()

    @property
    def failing(self) -> str | None:
        """The error of the last commit if it failed (``None`` while commits succeed)."""
        if self._error is None:
            return None
        return f"{type(self._error).__name__}: {self._error}"

    def set_received_revision(self, revision: int, event: Event | None = None) -> None:
        """Record the received revision and the change received there (``None``:
        not known, e.g. a listing's revision), whose change mark is recorded
        with it (worked out at commit time, off the event path)."""
        self._meta["received_revision"] = str(revision)
        self._meta["received_mark"] = ""
        self._received_event = event
        self._poke()

    def set_cluster_id(self, cluster_id: str) -> None:
        self._meta["cluster_id"] = cluster_id
        self._poke()

    def set_rewound(self, summary: str | None) -> None:
        """Record a registry rewind in progress (``None``: the node converged after it)."""
        self._meta["rewound"] = summary or ""
        self._poke()

    def _pending(self) -> int:
        return len(self._desired) + len(self._applied) + len(self._failures) + len(self._meta)

    def _poke(self) -> None:
        # The flusher lets writes gather for flush_interval after waking up.
        if not self._wake.is_set():
            self._wake.set()

    @property
    def pending(self) -> int:
        """Writes not yet committed."""
        return self._pending()

    async def wait_writable(self) -> None:
        """Wait while more than :data:`MAX_PENDING_WRITES` writes are pending."""
        while self._pending() > MAX_PENDING_WRITES and self._task is not None:
            self._flushed.clear()
            self._wake.set()
            await self._flushed.wait()

    async def flush(self) -> None:
        """Commit everything written so far."""
        while self._pending() and self._task is not None and not self._task.done():
            self._flushed.clear()
            self._wake.set()
            await self._flushed.wait()
        if self._error is not None:
            raise self._error

    # --- flusher ------------------------------------------------------------

    def _take(self) -> _Batch:
        if self._received_event is not None and "received_mark" in self._meta:
            self._meta["received_mark"] = event_mark(self._received_event)
        self._received_event = None
        batch = (self._desired, self._applied, self._failures, self._meta)
        self._desired, self._applied, self._failures, self._meta = {}, {}, {}, {}
        return batch

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if (not self._closing and not self._urgent.is_set()
                    and self._pending() < self._flush_batch):
                # Let more writes gather so one transaction carries many of them;
                # a handler call waiting for a commit cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._urgent.wait()
            self._wake.clear()
            self._urgent.clear()
            if self._pending():
                batch = self._take()
                try:
                    await asyncio.to_thread(self._commit, *batch)
                except Exception as exc:  # keep the node serving from memory
                    if self._error is None:
                        log.exception("node state: commit to %s failed; retrying every "
                                      "%.0fs", self.path, FLUSH_RETRY_DELAY)
                    self._error = exc
                    self._requeue(batch)
                    await asyncio.sleep(FLUSH_RETRY_DELAY)
                else:
                    if self._error is not None:
                        log.info("node state: commits to %s succeed again", self.path)
                    self._error = None
                    self._committed(batch[0])
            self._flushed.set()
            if self._closing:
                return
            if self._pending():
                self._wake.set()

    def _committed(self, desired: dict[str, _Desired]) -> None:
        durable = self._durable_desired
        for key, dv in desired.items():
            if dv is None:
                durable.pop(key, None)
            else:
                durable[key] = dv[0]
        if desired and self.on_desired_committed is not None:
            self.on_desired_committed(desired.keys())

    def _requeue(self, batch: _Batch) -> None:
        # Newer writes made during the failed commit win over the re-queued ones.
        desired, applied, failures, meta = batch
        self._desired = desired | self._desired
        self._applied = applied | self._applied
        self._failures = failures | self._failures
        self._meta = meta | self._meta

    def _commit(self, desired: dict[str, _Desired], applied: dict[str, _Applied],
                failures: dict[str, FailureRecord | None], meta: dict[str, str]) -> None:
        conn = self._conn
        if conn is None:
            raise StateError("state file is closed")
        d_put = []
        d_del = []
        for key, dv in desired.items():
            if dv is None:
                d_del.append((key,))
            else:
                d_put.append((key, dv[0], int(dv[1]), dv[2].text, int(dv[3])))
        a_put = []
        a_del = []
        for key, av in applied.items():
            if av is None:
                a_del.append((key,))
            else:
                a_put.append((key, av[0], av[1].text))
        f_put = []
        f_del = []
        for key, fv in failures.items():
            if fv is None:
                f_del.append((key,))
            else:
                f_put.append((key, fv.revision, fv.attempts, fv.first_failed, fv.last_failed,
                              fv.last_error))
        conn.execute("BEGIN")
        try:
            if d_put:
                conn.executemany("INSERT OR REPLACE INTO desired VALUES (?,?,?,?,?)", d_put)
            if d_del:
                conn.executemany("DELETE FROM desired WHERE key=?", d_del)
            if a_put:
                conn.executemany("INSERT OR REPLACE INTO applied VALUES (?,?,?)", a_put)
            if a_del:
                conn.executemany("DELETE FROM applied WHERE key=?", a_del)
            if f_put:
                conn.executemany("INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?,?)", f_put)
            if f_del:
                conn.executemany("DELETE FROM failures WHERE key=?", f_del)
            if meta:
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(meta.items()))
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (disk full does): keep its error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
