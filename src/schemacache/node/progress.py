"""Progress: which keys are not settled yet, and the settled revision.

A key is *unsettled* from the revision of its newest version until a worker is
done with it (applied, deleted, or recorded as failed).  The settled revision is
the highest R such that every event up to R is settled: the received revision
(kept by :class:`~schemacache.node.nodestate.NodeState`), held back below the
oldest unsettled version.

Waiters name the revision they wait for and are woken only once the settled
revision reaches it: a catching-up node settles tens of thousands of keys a
second, and waking every waiter at each one to re-check cost more than the
handler calls of a no-op handler.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from collections.abc import Callable


def _nothing_received() -> int:
    return 0


class Progress:
    """Unsettled keys, and waiters for a settled revision.

    :param received: reads the received revision (default: always 0), which
        :meth:`notify` needs to tell whether a waiter's revision is settled.
    """

    def __init__(self, received: Callable[[], int] = _nothing_received) -> None:
        self._received = received
        self._unsettled: dict[str, int] = {}
        # (revision, key) of every unsettled version, in two queues whose entries
        # go stale once their key settled or moved on: versions marked in revision
        # order (a watch's events: appended and taken in O(1)), and a min-heap of
        # the others (a repair's keys, marked in key order).
        self._in_order: collections.deque[tuple[int, str]] = collections.deque()
        self._heap: list[tuple[int, str]] = []
        # Min-heap of (revision, tiebreak, future) of waiters for a settled revision.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    def mark_unsettled(self, key: str, revision: int) -> None:
        """``key`` has a version at ``revision`` no worker is done with."""
        if self._unsettled.get(key) != revision:
            self._unsettled[key] = revision
            in_order = self._in_order
            if not in_order or in_order[-1][0] <= revision:
                in_order.append((revision, key))
            else:
                heapq.heappush(self._heap, (revision, key))

    def settle(self, key: str) -> None:
        """A worker is done with ``key`` (for now)."""
        if self._unsettled.pop(key, None) is not None:
            self.notify()

    def is_settled(self, key: str) -> bool:
        return key not in self._unsettled

    def unsettled(self) -> dict[str, int]:
        """A copy of the unsettled keys and their revisions."""
        return dict(self._unsettled)

    @property
    def pending(self) -> int:
        """Keys not settled yet."""
        return len(self._unsettled)

    def settled_revision(self, received: int) -> int:
        """Highest R such that every event up to R is settled, every event up to
        ``received`` (the received revision) having been received."""
        unsettled = self._unsettled
        in_order = self._in_order
        while in_order and unsettled.get(in_order[0][1]) != in_order[0][0]:
            in_order.popleft()
        heap = self._heap
        while heap and unsettled.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        settled = received
        if in_order:
            settled = min(settled, in_order[0][0] - 1)
        if heap:
            settled = min(settled, heap[0][0] - 1)
        return settled

    def reached(self, revision: int) -> asyncio.Future[None] | None:
        """``None`` when the settled revision is at ``revision`` or past it; else a
        future done at the first :meth:`notify` that finds it there.

        A waiter that gives up cancels the future and hands it to :meth:`discard`.
        """
        if self.settled_revision(self._received()) >= revision:
            return None
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._tiebreak), future))
        return future

    def discard(self, future: asyncio.Future[None]) -> None:
        """Forget a waiter's future (it timed out or was cancelled)."""
        waiters = [w for w in self._waiters if w[2] is not future]
        if len(waiters) != len(self._waiters):
            heapq.heapify(waiters)
            self._waiters = waiters

    def notify(self, received: int | None = None) -> None:
        """Wake the waiters whose revision is settled now (``received``: the
        received revision, if the caller has it at hand; default ``None``: read)."""
        waiters = self._waiters
        if not waiters:
            return
        if received is None:
            received = self._received()
        if waiters[0][0] > received:
            return  # not received yet, so not settled either: a catch-up's common case
        settled = self.settled_revision(received)
        while waiters and waiters[0][0] <= settled:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
