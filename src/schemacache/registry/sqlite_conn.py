"""The SQLite registry's threads and connections: one writer, a pool of readers.

Every SQLite call runs off the event loop.  Writes run on one dedicated
thread with one connection (never shared between threads); reads run on
:data:`READER_THREADS` threads, each taking an idle reader connection (or
opening one) for the call and giving it back after.  SQLite's errors are
mapped to schemacache's: a busy or locked file is
:class:`RegistryUnavailableError` (try again), anything else a
:class:`SqliteStoreError` naming the file, after which the failed connection
is not reused.  Another file moved under the registry's name is
:class:`SqliteReplacedError`, for good (see :meth:`SqliteConnections._let_go`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import RegistryAccessError, RegistryUnavailableError, SchemaCacheError
from .sqlite_changes import read_meta
from .sqlite_listing import open_reader
from .sqlite_schema import DEFAULT_BUSY_TIMEOUT, SqliteStoreError, open_writer

__all__ = ["READER_THREADS", "SqliteConnections", "SqliteReplacedError"]

READER_THREADS = 4
"""Threads (each with its own connection) serving reads beside the writer."""

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class SqliteReplacedError(RegistryAccessError):
    """Another file now has the registry's name (moved over it, or it was removed).

    This process's connections still reach the file it opened, which no one
    else will open again: reading it would show a registry the others no
    longer see, and writing it would lose the writes. The registry closes them
    and refuses every call until the process restarts on the new file.

    :param path: the database file's name.
    """

    def __init__(self, path: str):
        self.path = path
        super().__init__(
            f"sqlite registry {path} was replaced on disk after this process opened it; "
            "restart the process to use the new file (to restore a backup under running "
            f"processes, write it into the live file: sqlite3 {path} \".restore BACKUP\")")


def _logs_held(path: str) -> list[str]:
    """The log files named after ``path`` that this process has open (Linux:
    read from ``/proc/self/fd``; elsewhere none are known)."""
    held = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/self/fd/{fd}")  # the open file, even when unlinked
                held.add((st.st_dev, st.st_ino))
    logs = [f"{path}-wal", f"{path}-shm"]
    return [name for name in logs if _file_identity(name) in held]


def _file_identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file named ``path`` (``None``: there is none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SqliteConnections:
    """The writer's thread and connection and the reader pool of one registry.

    A call is ``fn(conn, *args)``, run on a thread with a connection of its
    own; see :meth:`run` and :meth:`read`.

    :param path: the database file (an absolute path).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False
        """Set by :meth:`close`: every later call raises :class:`RegistryUnavailableError`."""
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
        self._identity: tuple[int, int] | None = None
        # The file as first opened: every connection must reach that one.
        self.replaced = False
        """Set once another file took the registry's name: every later call
        raises :class:`SqliteReplacedError`."""

    # --- event-loop side --------------------------------------------------------------

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(conn, *args)`` on the writer's thread, mapping SQLite errors."""
        return await self._on(self._executor, self._guarded, fn, args)

    async def read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(conn, *args)`` on a reader thread with a reader connection."""
        if not self._schema_ready and not self.closed:
            await self.run(read_meta)  # the writer creates (or checks) the store first
        return await self._on(self._readers, self._read_guarded, fn, args)

    async def close(self) -> None:
        """Refuse further calls, then close every connection (the writer's on
        its own thread); calls already running end first or fail as closed."""
        if self.closed:
            return
        self.closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=False)
            self._readers.shutdown(wait=False)
            self._close_idle_readers()

    async def _let_go(self) -> None:
        """Close every connection to a file that was replaced, and remove its log.

        The old file's log (``-wal``, with its index ``-shm``) still has the
        registry's name, and whoever opens the new file reads the old log's
        pages as the new file's. SQLite leaves the log of a moved file in
        place when its last connection closes, so the logs this process held
        open are removed here: any other process still on the old file keeps
        its own open handles to them, and never removes a log by name again.
        """
        if self.replaced:
            return
        self.replaced = True
        stale = _logs_held(self.path)
        self._close_idle_readers()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        log.warning("%s", SqliteReplacedError(self.path))

    async def _on(self, executor: concurrent.futures.Executor,
                  call: Callable[[Callable[..., _T], tuple[Any, ...]], _T],
                  fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        if self.closed:
            raise RegistryUnavailableError(f"sqlite registry {self.path} is closed")
        if self.replaced or (self._identity is not None
                             and _file_identity(self.path) != self._identity):
            await self._let_go()
            raise SqliteReplacedError(self.path)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, call, fn, args)
        except RuntimeError as exc:  # executor shut down by a concurrent close()
            if self.closed:
                raise RegistryUnavailableError(f"sqlite registry {self.path} is closed") from exc
            raise

    # --- thread side --------------------------------------------------------------------

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
            conn = open_reader(self.path, DEFAULT_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise self._map_error(exc) from exc
        if self._identity is not None and _file_identity(self.path) != self._identity:
            conn.close()  # the file was replaced since the writer opened it
            raise SqliteReplacedError(self.path)
        return conn

    def _give_back_reader(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        with self._readers_lock:
            if not self.closed and not self.replaced:
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
            conn = open_writer(self.path)
            identity = _file_identity(self.path)
            if self._identity is None:
                self._identity = identity
            elif identity != self._identity:  # reopened after a failure, on another file
                conn.close()
                raise SqliteReplacedError(self.path)
            self._conn = conn
            self._schema_ready = True  # readers need not check the store again
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
