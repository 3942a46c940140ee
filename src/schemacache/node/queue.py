"""A level-triggered per-key work queue with priorities (client-go workqueue style).

A key is either *dirty* (waiting), *processing* (a worker holds it), both (it
changed while being processed: it is queued again when the worker is done), or
neither.  Adding a key that is already dirty does nothing except raise its
priority, so a burst of changes to one key collapses into one item; a key is
never handed to two workers at once.

A key added *rate limited* is held back: until its delay runs out, adding it
again does nothing, so a worker never takes it before its backoff is over (only
:meth:`WorkQueue.cancel_timer` releases it early).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .retry import RetryLimiter

PRIO_LIVE = 0
"""Keys changed by a watch event."""
PRIO_RETRY = 1
"""Keys whose retry delay ran out."""
PRIO_REPAIR = 2
"""Keys enqueued by a repair (full sync) or a per-key repair retry."""
PRIORITIES = (PRIO_LIVE, PRIO_RETRY, PRIO_REPAIR)


class WorkQueue:
    """Keys waiting for a worker, most urgent priority first, FIFO within one.

    Not thread-safe: use it from the event loop only.
    """

    def __init__(self) -> None:
        self._queues: tuple[deque[str], ...] = tuple(deque() for _ in PRIORITIES)
        self._dirty: dict[str, int] = {}
        self._processing: set[str] = set()
        self._timers: dict[str, tuple[asyncio.TimerHandle, int]] = {}
        self._held: set[str] = set()  # keys in backoff: add() waits for their timer
        self._nonempty = asyncio.Event()
        # Waiters of wait_for with their conditions: checked as keys are taken,
        # woken only once true (not once per key taken, to check for themselves).
        # While the urgent count is at or above _check_below, no condition can
        # hold and none is called (None: some condition may hold at any count).
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None], int | None]] = []
        self._check_below: int | None = None
        self._urgent = 0  # dirty keys of priority live or retry (what backpressure counts)
        self._shutdown = False

    # --- adding -------------------------------------------------------------

    def add(self, key: str, prio: int = PRIO_LIVE) -> None:
        """Mark ``key`` dirty at ``prio`` (a more urgent priority wins)."""
        if self._shutdown or key in self._held:
            return
        current = self._dirty.get(key)
        if current is not None and current <= prio:
            return
        if current is not None and current > PRIO_RETRY >= prio:
            self._urgent += 1
        elif current is None and prio <= PRIO_RETRY:
            self._urgent += 1
        self._dirty[key] = prio
        if key in self._processing:
            return  # re-queued by done()
        self._queues[prio].append(key)
        self._nonempty.set()

    def add_after(self, key: str, delay: float, prio: int = PRIO_RETRY) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending timer for it is kept
        if it fires sooner."""
        if self._shutdown:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        existing = self._timers.get(key)
        if existing is not None:
            handle, _ = existing
            if handle.when() <= when:
                return
            handle.cancel()
        handle = loop.call_at(when, self._fire_timer, key, prio)
        self._timers[key] = (handle, prio)

    def add_rate_limited(self, key: str, limiter: RetryLimiter, revision: int,
                         prio: int = PRIO_RETRY, *, delay: float | None = None) -> float | None:
        """Count a failed attempt of ``key`` at ``revision`` with ``limiter`` and
        hold the key back for the delay it answers (client-go's
        ``AddRateLimited``): the seconds held, or ``None`` when the key's
        attempts are used up (then nothing is queued).

        :param prio: priority the key comes back at (default :data:`PRIO_RETRY`).
        :param delay: a wait the failure asked for (see :meth:`RetryLimiter.when`).
        """
        wait = limiter.when(key, revision, delay=delay)
        if wait is not None:
            self.hold(key, wait, prio)
        return wait

    def hold(self, key: str, delay: float, prio: int = PRIO_RETRY) -> None:
        """Take ``key`` out of the queue for ``delay`` seconds, then add it at
        ``prio``; adds meanwhile do nothing."""
        if self._shutdown:
            return
        self.cancel_timer(key)
        self._discard_dirty(key)
        self.add_after(key, delay, prio)
        self._held.add(key)

    def _discard_dirty(self, key: str) -> None:
        prio = self._dirty.pop(key, None)
        if prio is not None and prio <= PRIO_RETRY:
            self._urgent -= 1  # its deque entry is now stale and skipped

    def cancel_timer(self, key: str) -> None:
        """Drop a pending delayed add of ``key`` (releasing a held key)."""
        self._held.discard(key)
        existing = self._timers.pop(key, None)
        if existing is not None:
            existing[0].cancel()

    def has_timer(self, key: str) -> bool:
        return key in self._timers

    def is_held(self, key: str) -> bool:
        """Whether ``key`` waits out a backoff (see :meth:`hold`)."""
        return key in self._held

    def _fire_timer(self, key: str, prio: int) -> None:
        self._timers.pop(key, None)
        self._held.discard(key)
        self.add(key, prio)

    # --- taking -------------------------------------------------------------

    def pop_nowait(self) -> tuple[str, int] | None:
        """The next key and its priority, now in *processing*; ``None`` if none waits."""
        for prio, q in enumerate(self._queues):
            while q:
                key = q.popleft()
                if self._dirty.get(key) != prio or key in self._processing:
                    continue  # stale entry: re-prioritised, or held by a worker
                del self._dirty[key]
                if prio <= PRIO_RETRY:
                    self._urgent -= 1
                self._processing.add(key)
                if self._conditions and (self._check_below is None
                                         or self._urgent < self._check_below):
                    self._check_conditions()
                return key, prio
        self._nonempty.clear()
        if not self._dirty:
            self._dirty = {}  # drained: let go of the table a backlog grew
        return None

    async def pop(self) -> tuple[str, int]:
        """Wait for the next key (see :meth:`pop_nowait`)."""
        while True:
            item = self.pop_nowait()
            if item is not None:
                return item
            if self._shutdown:
                raise asyncio.CancelledError
            await self._nonempty.wait()

    def done(self, key: str) -> None:
        """A worker finished ``key``; if it changed meanwhile it is queued again."""
        self._processing.discard(key)
        prio = self._dirty.get(key)
        if prio is not None:
            self._queues[prio].append(key)
            self._nonempty.set()

    # --- introspection ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._dirty)

    @property
    def urgent(self) -> int:
        """Dirty keys at live or retry priority."""
        return self._urgent

    @property
    def processing(self) -> int:
        return len(self._processing)

    def is_dirty(self, key: str) -> bool:
        return key in self._dirty

    def is_processing(self, key: str) -> bool:
        return key in self._processing

    async def wait_urgent_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` keys wait at live or retry priority."""
        await self.wait_for(lambda: self._urgent < limit, urgent_below=limit)

    async def wait_for(self, condition: Callable[[], bool], *,
                       urgent_below: int | None = None) -> None:
        """Return once ``condition()`` holds, checking it each time a worker
        takes a key (or at shutdown).

        :param urgent_below: ``condition()`` cannot hold while :attr:`urgent` is
            at or above this (default ``None``: it may at any time); it is not
            called then, so a backlog's waiters cost nothing per key taken.
        """
        if condition() or self._shutdown:
            return
        entry = (condition, asyncio.get_running_loop().create_future(), urgent_below)
        self._conditions.append(entry)
        self._update_check_below()
        try:
            await entry[1]
        finally:
            self._conditions.remove(entry)
            self._update_check_below()

    def _update_check_below(self) -> None:
        floors = [below for _, _, below in self._conditions]
        # Any waiter without a floor may be satisfied at any count.
        self._check_below = (max(b for b in floors if b is not None)
                             if floors and None not in floors else None)

    def _check_conditions(self) -> None:
        for condition, future, _ in self._conditions:
            if not future.done() and (self._shutdown or condition()):
                future.set_result(None)

    def shutdown(self) -> None:
        """Stop handing out keys and cancel every delayed add."""
        self._shutdown = True
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._held.clear()
        self._nonempty.set()
        self._check_conditions()

