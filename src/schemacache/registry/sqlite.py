"""``sqlite:///file`` — the embedded, durable registry, shared between processes.

One SQLite file holds the whole registry:

- ``meta``: one row — the store's ``cluster_id`` (random, created with the
  store), the revision counter and ``compact_revision`` (the oldest revision
  still in the change log);
- ``resources``: the current version of every schema key;
- ``changes``: the change log, one row per revision (``PUT``/``DELETE`` with
  the resource), read by watchers;
- ``nodes``: node registrations with a wall-clock expiry; they never touch
  the revision counter nor the change log.

Every write is one ``BEGIN IMMEDIATE`` transaction (CAS check, reference
checks, revision bump, resource row, change row, compaction), so revisions stay
gap-free even when several processes write to the same file.  The file is in
WAL mode, so readers never block the writer and a listing is one atomic
snapshot.  ``synchronous=FULL``: the registry is the source of truth and
other processes act on a revision as soon as it is committed; with ``NORMAL``
a power loss could roll back acknowledged commits and the same revision number
would then be issued again for different content.

All SQLite writes run on one dedicated thread per registry instance (one
connection, never shared between threads), never on the event loop.  Reads
run on a small pool of threads with connections of their own: in WAL mode a
reader works on its snapshot while a write transaction (a large apply, a
cascade) is in progress, so no read ever waits for a write.  Watchers
learn about commits of this instance at once, and about commits of other
connections (other processes) by polling ``PRAGMA data_version`` every
``poll_interval`` seconds, a check that costs no read of the database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar

from .._gc import gc_paused
from .._sqlite import enable_wal
from ..errors import (
    CompactedError,
    ConflictError,
    NotFoundError,
    RegistryRewoundError,
    RegistryUnavailableError,
    SchemaCacheError,
)
from ..model import Event, Resource
from ..stored import StoredResource
from .base import (
    DEFAULT_HISTORY,
    DEFAULT_NODE_TTL,
    NodeInfo,
    NodeLease,
    Registry,
)
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
from .sqlite_changes import decode, mark_at, read_changes, read_meta
from .sqlite_listing import open_reader, read_stored
from .sqlite_listing import prefix_bounds as _prefix_bounds
from .sqlite_rows import preloaded

DEFAULT_POLL_INTERVAL = 0.01
"""Seconds between two checks for commits made by other connections."""

DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's write lock before failing."""

READER_THREADS = 4
"""Threads (each with its own connection) serving reads beside the writer."""

WATCH_SAFETY_WAKEUP = 1.0
"""Seconds after which an idle watcher re-reads the log even without a notice."""

SCHEMA_VERSION = 1
"""Layout version stored in ``PRAGMA user_version``; another value is refused."""

_T = TypeVar("_T")
# Aliases: inside the class, ``list`` names the method.
_Resources: TypeAlias = list[Resource]
_Listing: TypeAlias = list[tuple[str, StoredResource]]
_Events: TypeAlias = list[Event]
_Nodes: TypeAlias = list[NodeInfo]
_Results: TypeAlias = list[ApplyResult]

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


_decode = decode


class SqliteRegistry(Registry):
    """A registry stored in one SQLite file, safe to share between processes.

    :param path: the database file; parent directories and the schema are
        created on first use.
    :param history: revisions of change history kept; older ones are compacted
        after each write (default :data:`DEFAULT_HISTORY`).
    :param poll_interval: seconds between checks for commits made by other
        processes while a watch is idle (default :data:`DEFAULT_POLL_INTERVAL`).
    """

    def __init__(
        self,
        path: str,
        history: int = DEFAULT_HISTORY,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ):
        if history < 1:
            raise ValueError("history must keep at least one revision")
        # Resolved now: a later change of the working directory must not move the store.
        self.path = os.path.abspath(path)
        self.url = f"sqlite:///{path}"
        self._history = history
        self._poll_interval = poll_interval
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="schemacache-sqlite"
        )
        self._conn: sqlite3.Connection | None = None  # used on the executor thread only
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=READER_THREADS, thread_name_prefix="schemacache-sqlite-read"
        )
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        # Watch wake-ups: a counter bumped on every known commit, and the
        # futures of idle watchers waiting for it to move.
        self._generation = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._watchers = 0
        self._poller: asyncio.Task[None] | None = None

    # --- reads --------------------------------------------------------------

    async def get(self, key: str) -> Resource:
        value = await self._read(self._get_value, key)
        if value is None:
            raise NotFoundError(key)
        return _decode(value)

    async def list(self, prefix: str = "") -> tuple[_Resources, int]:
        return await self._read(self._list, prefix)

    async def list_stored(self, prefix: str = "") -> tuple[_Listing, int]:
        return await self._read(read_stored, prefix)

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        _, revision, compact_revision = await self._run(self._meta)
        if start_revision < compact_revision:
            raise CompactedError(compact_revision, start_revision)
        if start_revision - 1 > revision:
            raise RegistryRewoundError(revision, start_revision - 1)
        if mark and start_revision > 1:
            found = await self._read(mark_at, start_revision - 1)
            if found is not None and found != mark:
                raise RegistryRewoundError(revision, start_revision - 1, diverged=True)

    async def revision(self) -> int:
        return (await self._read(self._meta))[1]

    async def cluster_id(self) -> str:
        return (await self._read(self._meta))[0]

    async def check(self) -> None:
        """Open the file for writing (creating the store if needed); raises
        :class:`SqliteStoreError` naming the file when it cannot serve."""
        await self._run(self._meta)

    # --- writes -------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        rev = await self._run(self._put, resource, expected_revision)
        self._notify()
        return rev

    async def apply(self, resources: Sequence[Resource]) -> _Results:
        results = await self._run(self._apply, resources)
        self._notify()
        return results

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        rev = await self._run(self._cascade_delete if cascade else self._delete, key,
                              expected_revision)
        self._notify()
        return rev

    async def compact(self, revision: int) -> None:
        await self._run(self._compact, revision)

    # --- changes ------------------------------------------------------------

    async def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        if self._closed:
            return
        self._watchers += 1
        try:
            self._ensure_poller()
            if start_revision is None:
                next_rev = (await self._read(self._meta))[1] + 1
            else:
                next_rev = start_revision
            last_mark: str | None = None
            while not self._closed:
                seen = self._generation
                try:
                    events, after, last_mark = await self._read(
                        read_changes, prefix, next_rev, last_mark)
                except RegistryUnavailableError:
                    if self._closed:
                        return
                    raise
                for event in events:
                    yield event
                if after != next_rev:
                    # Rows were read (maybe none under ``prefix``): read on
                    # until the log is exhausted before waiting.
                    next_rev = after
                    continue
                if self._generation == seen and not self._closed:
                    await self._wait_for_change(seen)
        finally:
            self._watchers -= 1

    # --- node registrations ---------------------------------------------------

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        info = NodeInfo(name=name, admin_url=admin_url)
        await self._run(self._upsert_node, info, ttl)

        async def refresh() -> None:
            await self._run(self._upsert_node, info, ttl)

        async def revoke() -> None:
            await self._run(self._revoke_node, info)

        return NodeLease(info=info, ttl=ttl, refresh=refresh, revoke=revoke)

    async def list_nodes(self) -> _Nodes:
        return await self._read(self._list_nodes)

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=False)
            self._readers.shutdown(wait=False)
            self._close_idle_readers()

    # --- event-loop side internals ----------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(conn, *args)`` on the writer's thread, mapping SQLite errors."""
        return await self._on(self._executor, self._guarded, fn, args)

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(conn, *args)`` on a reader thread with a reader connection."""
        if not self._schema_ready and not self._closed:
            await self.check()  # the writer creates (or checks) the store first
        return await self._on(self._readers, self._read_guarded, fn, args)

    async def _on(self, executor: concurrent.futures.Executor,
                  call: Callable[[Callable[..., _T], tuple[Any, ...]], _T],
                  fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        if self._closed:
            raise RegistryUnavailableError(f"sqlite registry {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, call, fn, args)
        except RuntimeError as exc:  # executor shut down by a concurrent close()
            if self._closed:
                raise RegistryUnavailableError(f"sqlite registry {self.path} is closed") from exc
            raise

    def _notify(self) -> None:
        self._generation += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_for_change(self, seen: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            if self._generation == seen and not self._closed:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                # a cancellation that races with the future's result, and a
                # watcher that cannot be cancelled hangs whoever stops it.
                async with asyncio.timeout(WATCH_SAFETY_WAKEUP):
                    await fut
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)

    def _ensure_poller(self) -> None:
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll(), name=f"sqlite-poll {self.path}")

    async def _poll(self) -> None:
        """Notify watchers of commits made through other connections."""
        last: int | None = None
        while not self._closed:
            try:
                version = await self._run(self._data_version)
            except RegistryUnavailableError:
                if self._closed:
                    return
                version = None
            except SchemaCacheError:
                version = None  # watchers will surface the error on their own read
            if version != last or version is None:
                # The first sample counts as a change: a commit may have landed
                # between a watcher's last read and this baseline.
                last = version
                self._notify()
            await asyncio.sleep(self._poll_interval)
            if self._watchers == 0:
                # No await between this check and clearing the slot, so a new
                # watcher either sees this task alive or starts a new one.
                if self._poller is asyncio.current_task():
                    self._poller = None
                return

    # --- thread side: connection --------------------------------------------------

    def _guarded(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.Error as exc:
            mapped = self._map_error(exc)
            if isinstance(mapped, SqliteStoreError):
                self._drop_broken()
            raise mapped from exc

    def _map_error(self, exc: sqlite3.Error) -> SchemaCacheError:
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in text or "busy" in text:
                return RegistryUnavailableError(f"sqlite registry {self.path}: {exc}")
            return SqliteStoreError(self.path, str(exc))
        return SqliteStoreError(self.path, f"not a usable SQLite database ({exc})")

    def _read_guarded(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        conn = self._take_reader()
        try:
            result = fn(conn, *args)
        except sqlite3.Error as exc:
            mapped = self._map_error(exc)
            if isinstance(mapped, SqliteStoreError):
                conn.close()  # not reused: the next read opens the file again
            else:
                self._give_back_reader(conn)
            raise mapped from exc
        except BaseException:
            self._give_back_reader(conn)
            raise
        self._give_back_reader(conn)
        return result

    def _take_reader(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        try:
            return open_reader(self.path, DEFAULT_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise self._map_error(exc) from exc

    def _give_back_reader(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        with self._readers_lock:
            if not self._closed:
                self._idle_readers.append(conn)
                return
        conn.close()

    def _close_idle_readers(self) -> None:
        with self._readers_lock:
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()

    def _drop_broken(self) -> None:
        # A connection that failed below the SQL level is not reused: the next
        # call opens (and checks) the file again.
        if self._conn is not None:
            try:
                self._conn.rollback()
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
            self._schema_ready = True  # readers need not check the store again
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise SqliteStoreError(self.path, f"cannot create directory {parent}: {exc}") from exc
        if os.path.isdir(self.path):
            raise SqliteStoreError(self.path, "is a directory")
        # isolation_level=None: transactions are opened explicitly below.
        conn = sqlite3.connect(self.path, timeout=DEFAULT_BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(DEFAULT_BUSY_TIMEOUT * 1000)}")
            mode = enable_wal(conn, DEFAULT_BUSY_TIMEOUT)
            if mode != "wal":
                raise SqliteStoreError(self.path, f"cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
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
                    self.path,
                    f"holds another layout (user_version {version}, tables "
                    f"{', '.join(sorted(tables))}); expected a schemacache registry "
                    f"of layout {SCHEMA_VERSION}",
                )
            elif conn.execute("SELECT count(*) FROM meta").fetchone()[0] != 1:
                raise SqliteStoreError(self.path, "the meta table must hold exactly one row")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- thread side: reads -------------------------------------------------------

    _meta = staticmethod(read_meta)

    @staticmethod
    def _data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    @staticmethod
    def _get_value(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM resources WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _values_under(conn: sqlite3.Connection, prefix: str) -> Iterable[str]:
        low, high = _prefix_bounds(prefix)
        if high is None:
            rows = conn.execute(
                "SELECT key, value FROM resources WHERE key >= ? ORDER BY key", (low,)
            )
            return (value for key, value in rows if key.startswith(prefix))
        rows = conn.execute(
            "SELECT value FROM resources WHERE key >= ? AND key < ? ORDER BY key", (low, high)
        )
        return (value for (value,) in rows)

    def _list(self, conn: sqlite3.Connection, prefix: str) -> tuple[_Resources, int]:
        # One read transaction: the revision and the rows come from one snapshot.
        with gc_paused():
            conn.execute("BEGIN")
            try:
                revision = self._meta(conn)[1]
                values = list(self._values_under(conn, prefix))
            finally:
                conn.execute("COMMIT")
            return [_decode(v) for v in values], revision

    def _iter_candidates(self, conn: sqlite3.Connection, key: str) -> Iterator[Resource]:
        """The resources under the prefixes where dependents of ``key`` can live, lazily."""
        for prefix in dependent_candidates_prefixes(key):
            for value in self._values_under(conn, prefix):
                yield _decode(value)

    def _candidates(self, conn: sqlite3.Connection, key: str) -> _Resources:
        return list(self._iter_candidates(conn, key))

    def _lookup(self, conn: sqlite3.Connection) -> Callable[[str], Resource | None]:
        def lookup(key: str) -> Resource | None:
            value = self._get_value(conn, key)
            return None if value is None else _decode(value)

        return lookup

    # --- thread side: writes --------------------------------------------------------

    def _write(self, conn: sqlite3.Connection, body: Callable[[], _T]) -> _T:
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

    @staticmethod
    def _current(conn: sqlite3.Connection, key: str) -> tuple[str, int] | None:
        row = conn.execute(
            "SELECT value, mod_revision FROM resources WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    @staticmethod
    def _check_expected(key: str, actual: int, expected: int | None) -> None:
        if expected is not None and actual != expected:
            raise ConflictError(key, expected, actual)

    def _next_revision(self, conn: sqlite3.Connection) -> int:
        return self._next_revisions(conn, 1)

    def _next_revisions(self, conn: sqlite3.Connection, count: int) -> int:
        """Take ``count`` revisions (compacting what falls out of the history);
        returns the first."""
        _, revision, compact_revision = self._meta(conn)
        last = revision + count
        oldest = last - self._history + 1
        if oldest > compact_revision:
            conn.execute("DELETE FROM changes WHERE revision < ?", (oldest,))
            conn.execute(
                "UPDATE meta SET revision = ?, compact_revision = ? WHERE id = 1", (last, oldest)
            )
        else:
            conn.execute("UPDATE meta SET revision = ? WHERE id = 1", (last,))
        return revision + 1

    def _put(
        self, conn: sqlite3.Connection, resource: Resource, expected_revision: int | None
    ) -> int:
        key = resource.key

        def body() -> int:
            row = self._current(conn, key)
            self._check_expected(key, row[1] if row else 0, expected_revision)
            current = _decode(row[0]) if row else None
            check_references(resource, self._lookup(conn))
            # Lazily: one member is enough to refuse a catalog change.
            check_group_update(resource, current, lambda: self._iter_candidates(conn, key))
            return self._store(conn, resource, current)

        return self._write(conn, body)

    def _store(self, conn: sqlite3.Connection, resource: Resource,
               current: Resource | None) -> int:
        """Write one version (resource row and change row) at the next revision."""
        rev = self._next_revision(conn)
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

    def _remove(self, conn: sqlite3.Connection, key: str, value: str) -> int:
        rev = self._next_revision(conn)
        conn.execute("DELETE FROM resources WHERE key = ?", (key,))
        conn.execute(
            "INSERT INTO changes (revision, key, type, resource) VALUES (?, ?, 'DELETE', ?)",
            (rev, key, value),
        )
        return rev

    def _existing(
        self, conn: sqlite3.Connection, key: str, expected_revision: int | None
    ) -> tuple[str, int]:
        """The stored value and mod_revision of ``key``, which must exist and
        match ``expected_revision`` (``None``: any) for a delete to go ahead."""
        row = self._current(conn, key)
        if row is None:
            if expected_revision is None:
                raise NotFoundError(key)
            raise ConflictError(key, expected_revision, 0)
        self._check_expected(key, row[1], expected_revision)
        return row

    def _delete(
        self, conn: sqlite3.Connection, key: str, expected_revision: int | None
    ) -> int:
        def body() -> int:
            row = self._existing(conn, key, expected_revision)
            refuse_if_referenced(key, self._candidates(conn, key))
            return self._remove(conn, key, row[0])

        return self._write(conn, body)

    def _cascade_delete(
        self, conn: sqlite3.Connection, key: str, expected_revision: int | None
    ) -> int:
        """Delete ``key`` after everything that depends on it, in one transaction.

        Each dependent's delete is a write (a revision) of its own, in dependency
        order, as on every backend; sharing one transaction means that no reader
        sees part of a cascade and a crash or an error part-way deletes nothing.
        """
        def body() -> int:
            row = self._existing(conn, key, expected_revision)
            for dep in cascade_plan(key, self._transitive_candidates(conn, key)):
                current = self._current(conn, dep.key)
                if current is not None:
                    self._remove(conn, dep.key, current[0])
            return self._remove(conn, key, row[0])

        return self._write(conn, body)

    def _transitive_candidates(self, conn: sqlite3.Connection, key: str) -> _Resources:
        """Every resource that may reference ``key`` directly or through others
        (each candidate prefix read once)."""
        return [_decode(value) for prefix in candidate_prefixes_closure(key)
                for value in self._values_under(conn, prefix)]

    def _apply(self, conn: sqlite3.Connection, resources: Sequence[Resource]) -> _Results:
        """Check every rule against the transaction's snapshot, then write: all or nothing."""
        def body() -> _Results:
            with gc_paused():
                steps = plan_apply(resources, preloaded(conn, resources, self._lookup(conn)),
                                   lambda key: self._iter_candidates(conn, key))
                writes = [step for step in steps if step.changed]
                # One revision each, taken together; rows written in two batches.
                rev = self._next_revisions(conn, len(writes)) if writes else 0
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

        return self._write(conn, body)

    def _compact(self, conn: sqlite3.Connection, revision: int) -> None:
        def body() -> None:
            _, current, compact_revision = self._meta(conn)
            target = min(revision, current)
            if target <= compact_revision:
                return
            conn.execute("DELETE FROM changes WHERE revision < ?", (target,))
            conn.execute("UPDATE meta SET compact_revision = ? WHERE id = 1", (target,))

        self._write(conn, body)

    # --- thread side: node registrations ------------------------------------------------

    def _upsert_node(self, conn: sqlite3.Connection, info: NodeInfo, ttl: float) -> None:
        def body() -> None:
            now = time.time()
            # Expired rows are dropped here so the table does not grow with
            # every node that ever ran.
            conn.execute("DELETE FROM nodes WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO nodes (name, admin_url, expires_at) VALUES (?, ?, ?)",
                (info.name, info.admin_url, now + ttl),
            )

        self._write(conn, body)

    def _revoke_node(self, conn: sqlite3.Connection, info: NodeInfo) -> None:
        def body() -> None:
            conn.execute(
                "DELETE FROM nodes WHERE name = ? AND admin_url = ?", (info.name, info.admin_url)
            )

        self._write(conn, body)

    @staticmethod
    def _list_nodes(conn: sqlite3.Connection) -> _Nodes:
        rows = conn.execute(
            "SELECT name, admin_url FROM nodes WHERE expires_at > ? ORDER BY name", (time.time(),)
        ).fetchall()
        return [NodeInfo(name=str(name), admin_url=str(url)) for name, url in rows]
