"""Progress: which keys are not settled yet, and the settled revision.

A key is *unsettled* from the revision of its newest version until a worker is
done with it (applied, deleted, or recorded as failed).  The settled revision is
the highest R such that every event up to R is settled: the received revision
(kept by :class:`~schemacache.node.nodestate.NodeState`), held back below the
oldest unsettled version.
"""

from __future__ import annotations

import asyncio
import heapq


class Progress:
    """Unsettled keys, and an event for waiters."""

    def __init__(self) -> None:
        self._unsettled: dict[str, int] = {}
        # Min-heap of (revision, key); entries whose key settled or moved on are stale.
        self._heap: list[tuple[int, str]] = []
        self._changed = asyncio.Event()
        self._watched = False

    def mark_unsettled(self, key: str, revision: int) -> None:
        """``key`` has a version at ``revision`` no worker is done with."""
        if self._unsettled.get(key) != revision:
            self._unsettled[key] = revision
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
        heap = self._heap
        unsettled = self._unsettled
        while heap and unsettled.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return received
        return min(received, heap[0][0] - 1)

    def changed(self) -> asyncio.Event:
        """An event set at the next :meth:`notify` (take it before checking the
        condition you wait for)."""
        self._watched = True
        return self._changed

    def notify(self) -> None:
        """Wake whoever waits on :meth:`changed`."""
        if self._watched:
            event, self._changed = self._changed, asyncio.Event()
            self._watched = False
            event.set()
