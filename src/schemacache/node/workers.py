"""The workers: tasks that take keys from the work queue and reconcile them,
and the batches (a repair, the start-up backlog) that wait for them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from .queue import WorkQueue
from .tasks import cancel_and_wait
from .text import safe

log = logging.getLogger(__name__)

YIELD_EVERY = 64
"""Keys a worker handles without a handler await before yielding to the loop."""


@dataclass
class WorkBatch:
    """Keys enqueued together (a repair, the start-up backlog); done when a
    worker has handled each of them once."""

    outstanding: set[str]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    incomplete: bool = False

    def finish(self, key: str, ok: bool) -> None:
        if key in self.outstanding:
            self.outstanding.discard(key)
            if not ok:
                self.incomplete = True
            if not self.outstanding:
                self.done.set()


class Workers:
    """``count`` tasks reconciling keys from ``queue``.

    :param queue: where keys come from.
    :param count: concurrent workers.
    :param reconcile: ``reconcile(key, prio)`` handles one key: ``None`` when
        done, else an awaitable that finishes it.
    :param on_error: called with the key and the exception when ``reconcile``
        raised unexpectedly (the key must not be lost).
    :param outcome: after a key was handled: ``None`` while a worker is not done
        with it for now (it waits for something on its way), else whether it
        converged (what the batches holding it learn).
    """

    def __init__(self, queue: WorkQueue, count: int, *,
                 reconcile: Callable[[str, int], Awaitable[None] | None],
                 on_error: Callable[[str, Exception], None],
                 outcome: Callable[[str], bool | None]):
        self.queue = queue
        self.count = count
        self._reconcile = reconcile
        self._on_error = on_error
        self._outcome = outcome
        self._batches: list[WorkBatch] = []
        self._tasks: list[asyncio.Task[None]] = []

    def track(self, keys: Iterable[str]) -> WorkBatch:
        """A batch done once a worker has handled each of ``keys`` (at once if none)."""
        batch = WorkBatch(set(keys))
        if batch.outstanding:
            self._batches.append(batch)
        else:
            batch.done.set()
        return batch

    def start(self) -> None:
        for i in range(self.count):
            self._tasks.append(asyncio.create_task(self._work(), name=f"worker-{i}"))

    async def stop(self) -> None:
        """Stop the queue and the workers; release every batch."""
        self.queue.shutdown()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for batch in self._batches:
            batch.done.set()

    def alive(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def _work(self) -> None:
        handled = 0
        queue = self.queue
        while True:
            # Straight from the queue while it holds work: a catch-up takes
            # tens of thousands of keys a second, each without a coroutine here.
            item = queue.pop_nowait()
            key, prio = item if item is not None else await queue.pop()
            try:
                pending = self._reconcile(key, prio)
                if pending is not None:
                    await pending
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug must not lose the key: it is retried by the normal rules.
                log.exception("reconcile of %s failed unexpectedly; it will be retried",
                              safe(key))
                self._on_error(key, exc)
            finally:
                self.queue.done(key)
            if self._batches:
                self._finish(key)
            handled += 1
            if handled % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _finish(self, key: str) -> None:
        ok = self._outcome(key)
        if ok is None:
            return
        for batch in self._batches:
            batch.finish(key, ok)
        self._batches = [b for b in self._batches if not b.done.is_set()]
