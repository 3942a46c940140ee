"""How the SQLite registry's watchers learn of commits.

A watcher reads the change log from its cursor on (see
:func:`~schemacache.registry.sqlite_changes.read_changes`) until it is
exhausted, then waits for a wake-up; while its consumer takes one batch, the
next one is read on a reader thread (a catch-up then decodes and applies at
once, rather than by turns).  Commits of this registry instance wake
the watchers at once (:meth:`SqliteWatch.notify`); commits of other
connections (other processes) are noticed by a poller, one task while any
watch is open, checking ``PRAGMA data_version`` every ``poll_interval``
seconds, a check that costs no read of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator
from typing import Any

from ..errors import RegistryUnavailableError, SchemaCacheError
from ..model import Event
from .sqlite_changes import read_changes, read_meta
from .sqlite_conn import SqliteConnections

__all__ = ["DEFAULT_POLL_INTERVAL", "WATCH_SAFETY_WAKEUP", "SqliteWatch"]

DEFAULT_POLL_INTERVAL = 0.01
"""Seconds between two checks for commits made by other connections."""

WATCH_SAFETY_WAKEUP = 1.0
"""Seconds after which an idle watcher re-reads the log even without a notice."""


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class SqliteWatch:
    """The watches of one registry, and their wake-ups.

    :param conns: the registry's connections (a watch ends when they close).
    :param poll_interval: seconds between checks for commits made by other
        processes while a watch is idle (default :data:`DEFAULT_POLL_INTERVAL`).
    """

    def __init__(
        self, conns: SqliteConnections, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> None:
        self._conns = conns
        self._poll_interval = poll_interval
        # Watch wake-ups: a counter bumped on every known commit, and the
        # futures of idle watchers waiting for it to move.
        self._generation = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._watchers = 0
        self._poller: asyncio.Task[None] | None = None

    @property
    def polling(self) -> bool:
        """Whether the poll for other connections' commits is running."""
        return self._poller is not None

    @property
    def idle(self) -> int:
        """How many watchers wait for a commit, having read the whole log."""
        return len(self._waiters)

    async def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """The events under ``prefix`` (default: all) from ``start_revision``
        (default ``None``: the next revision) on, until the registry closes."""
        async with contextlib.aclosing(self.batches(prefix, start_revision)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def batches(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncGenerator[list[Event], None]:
        """As :meth:`watch`, the events of each read of the change log in one
        list (never empty)."""
        conns = self._conns
        if conns.closed:
            return
        self._watchers += 1
        try:
            self._ensure_poller()
            if start_revision is None:
                next_rev = (await conns.read(read_meta))[1] + 1
            else:
                next_rev = start_revision
            last_mark: str | None = None
            # The read under way: the next batch is read while the consumer
            # takes the last one.
            ahead: asyncio.Task[tuple[list[Event], int, str | None]] | None = None
            try:
                while not conns.closed:
                    if ahead is None:
                        seen = self._generation
                        ahead = self._read_ahead(prefix, next_rev, last_mark)
                    try:
                        events, after, last_mark = await ahead
                    except RegistryUnavailableError:
                        if conns.closed:
                            return
                        raise
                    ahead = None
                    if after != next_rev:
                        # Rows were read (maybe none under ``prefix``): read on
                        # until the log is exhausted before waiting.
                        next_rev = after
                        seen = self._generation
                        ahead = self._read_ahead(prefix, next_rev, last_mark)
                        if events:
                            yield events
                        continue
                    if events:
                        yield events
                    if self._generation == seen and not conns.closed:
                        await self._wait_for_change(seen)
            finally:
                if ahead is not None:
                    ahead.cancel()
        finally:
            self._watchers -= 1

    def _read_ahead(self, prefix: str, next_rev: int, last_mark: str | None
                    ) -> asyncio.Task[tuple[list[Event], int, str | None]]:
        """Start reading the changes from ``next_rev`` on (see :func:`read_changes`)."""
        task = asyncio.ensure_future(self._conns.read(read_changes, prefix, next_rev, last_mark))
        # A read left behind when the watch closes: its outcome is nobody's.
        task.add_done_callback(_ignore_outcome)
        return task

    def notify(self) -> None:
        """Wake every idle watcher: something was committed (or the registry closes)."""
        self._generation += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def stop(self) -> None:
        """Wake every watcher and stop the poller: the registry closes (watchers
        see its connections closed when they run next)."""
        self.notify()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _wait_for_change(self, seen: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            if self._generation == seen and not self._conns.closed:
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
            self._poller = loop.create_task(self._poll(),
                                            name=f"sqlite-poll {self._conns.path}")

    async def _poll(self) -> None:
        """Notify watchers of commits made through other connections."""
        last: int | None = None
        while not self._conns.closed:
            try:
                version = await self._conns.run(_data_version)
            except RegistryUnavailableError:
                if self._conns.closed:
                    return
                version = None
            except SchemaCacheError:
                version = None  # watchers will surface the error on their own read
            if version != last or version is None:
                # The first sample counts as a change: a commit may have landed
                # between a watcher's last read and this baseline.
                last = version
                self.notify()
            await asyncio.sleep(self._poll_interval)
            if self._watchers == 0:
                # No await between this check and clearing the slot, so a new
                # watcher either sees this task alive or starts a new one.
                if self._poller is asyncio.current_task():
                    self._poller = None
                return
