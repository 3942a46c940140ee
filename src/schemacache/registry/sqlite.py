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

:class:`SqliteRegistry` is the public face; each concern lives in a module of
its own, all sharing one :class:`SqliteConnections`:

- :mod:`.sqlite_schema` — the file's layout, opening it for writing, and the
  ``BEGIN IMMEDIATE`` transaction every write runs in;
- :mod:`.sqlite_conn` — the writer's thread and connection, the reader pool,
  SQLite's errors mapped to schemacache's;
- :mod:`.sqlite_listing` and :mod:`.sqlite_rows` — resources read by key or
  key prefix;
- :mod:`.sqlite_writes` — put, delete, cascade delete, apply and compaction,
  with the revision counter;
- :mod:`.sqlite_changes` and :mod:`.sqlite_watch` — the change log and the
  watchers' wake-ups;
- :mod:`.sqlite_nodes` — node registrations.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from ..errors import CompactedError, NotFoundError, RegistryRewoundError
from ..model import Event, Resource
from ..stored import StoredResource
from .base import DEFAULT_HISTORY, DEFAULT_NODE_TTL, NodeInfo, NodeLease, Registry
from .rules import ApplyResult
from .sqlite_changes import decode, mark_at, read_meta
from .sqlite_conn import READER_THREADS, SqliteConnections
from .sqlite_listing import get_value, read_resources, read_stored
from .sqlite_nodes import SqliteNodes
from .sqlite_schema import DEFAULT_BUSY_TIMEOUT, SCHEMA_VERSION, SqliteStoreError
from .sqlite_watch import DEFAULT_POLL_INTERVAL, WATCH_SAFETY_WAKEUP, SqliteWatch
from .sqlite_writes import (
    apply_resources,
    cascade_delete,
    compact_log,
    delete_resource,
    put_resource,
)

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_POLL_INTERVAL",
    "READER_THREADS",
    "SCHEMA_VERSION",
    "WATCH_SAFETY_WAKEUP",
    "SqliteRegistry",
    "SqliteStoreError",
]

_T = TypeVar("_T")


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
        self._conns = SqliteConnections(self.path)
        self._watches = SqliteWatch(self._conns, poll_interval)
        self._nodes = SqliteNodes(self._conns)

    # --- reads --------------------------------------------------------------

    async def get(self, key: str) -> Resource:
        value = await self._conns.read(get_value, key)
        if value is None:
            raise NotFoundError(key)
        return decode(value)

    async def list(self, prefix: str = "") -> tuple[builtins.list[Resource], int]:
        return await self._conns.read(read_resources, prefix)

    async def list_stored(
            self, prefix: str = "") -> tuple[builtins.list[tuple[str, StoredResource]], int]:
        return await self._conns.read(read_stored, prefix)

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        _, revision, compact_revision = await self._conns.run(read_meta)
        if start_revision < compact_revision:
            raise CompactedError(compact_revision, start_revision)
        if start_revision - 1 > revision:
            raise RegistryRewoundError(revision, start_revision - 1)
        if mark and start_revision > 1:
            found = await self._conns.read(mark_at, start_revision - 1)
            if found is not None and found != mark:
                raise RegistryRewoundError(revision, start_revision - 1, diverged=True)

    async def revision(self) -> int:
        return (await self._conns.read(read_meta))[1]

    async def cluster_id(self) -> str:
        return (await self._conns.read(read_meta))[0]

    async def check(self) -> None:
        """Open the file for writing (creating the store if needed); raises
        :class:`SqliteStoreError` naming the file when it cannot serve."""
        await self._conns.run(read_meta)

    # --- writes -------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        return await self._write(put_resource, resource, expected_revision)

    async def apply(self, resources: Sequence[Resource]) -> builtins.list[ApplyResult]:
        return await self._write(apply_resources, resources)

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        return await self._write(cascade_delete if cascade else delete_resource, key,
                                 expected_revision)

    async def compact(self, revision: int) -> None:
        await self._conns.run(compact_log, revision)

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run the write ``fn(conn, history, *args)`` on the writer's thread,
        then wake the watchers."""
        result = await self._conns.run(fn, self._history, *args)
        self._watches.notify()
        return result

    # --- changes ------------------------------------------------------------

    def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        return self._watches.watch(prefix, start_revision)

    def watch_batches(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncGenerator[builtins.list[Event], None]:
        return self._watches.batches(prefix, start_revision)

    # --- node registrations ---------------------------------------------------

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        return await self._nodes.register_node(name, admin_url, ttl)

    async def list_nodes(self) -> builtins.list[NodeInfo]:
        return await self._nodes.list_nodes()

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        if self._conns.closed:
            return
        # Watchers woken now run after the connections are marked closed, and end.
        self._watches.stop()
        await self._conns.close()
