"""The retry-forever design schemacache replaces, reproduced for comparison.

A single consumer takes events from one FIFO queue and calls the handler; a
failed event is re-queued at once, behind nothing but the events already
waiting, and tried again forever.  This is how a cache whose failed events are
immediately re-enqueued behaves: a poisoned event spins, burns handler calls
and keeps delaying everything queued behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class BaselineStats:
    """What the consumer did: successful calls, and handler calls per key."""

    applied: int = 0
    calls_by_key: dict[str, int] = field(default_factory=dict)


class RetryForeverConsumer:
    """One consumer, immediate re-enqueue of failures, no attempt limit.

    :param handler: coroutine function ``handler(key)``; raising means failure.
    """

    def __init__(self, handler: Callable[[str], Awaitable[None]]):
        self._handler = handler
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.stats = BaselineStats()

    def put(self, key: str) -> None:
        self._queue.put_nowait(key)

    async def run_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Consume until ``done()`` holds or ``deadline`` (monotonic seconds) passes."""
        while not done() and time.monotonic() < deadline:
            key = await self._queue.get()
            self.stats.calls_by_key[key] = self.stats.calls_by_key.get(key, 0) + 1
            try:
                await self._handler(key)
            except Exception:
                self._queue.put_nowait(key)  # retry forever, at once
                await asyncio.sleep(0)
                continue
            self.stats.applied += 1
