"""``memory://`` — an in-process registry for tests and examples.

Everything lives in this process: one dict of current versions, one list of
change events (the history watchers read), one revision counter.  All
mutation happens between two awaits, so each write is atomic under asyncio.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from ..errors import CompactedError, ConflictError, NotFoundError
from ..model import Event, EventType, Resource
from .base import (
    DEFAULT_HISTORY,
    DEFAULT_NODE_TTL,
    NodeInfo,
    NodeLease,
    Registry,
)
from .rules import (
    ApplyResult,
    cascade_plan,
    check_group_update,
    check_references,
    dependent_candidates_prefixes,
    plan_apply,
    refuse_if_referenced,
)


class MemoryRegistry(Registry):
    """An in-process registry.

    :param history: revisions of history kept before older ones are compacted
        (default :data:`DEFAULT_HISTORY`).
    """

    def __init__(self, history: int = DEFAULT_HISTORY):
        self.url = "memory://"
        self._history_limit = history
        self._items: dict[str, Resource] = {}
        self._events: list[Event] = []
        self._event_revs: list[int] = []
        self._revision = 0
        self._compact_revision = 0
        self._cluster_id = uuid.uuid4().hex[:16]
        self._changed = asyncio.Condition()
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._closed = False

    # --- reads --------------------------------------------------------------

    async def get(self, key: str) -> Resource:
        try:
            return self._items[key]
        except KeyError:
            raise NotFoundError(key) from None

    async def list(self, prefix: str = "") -> tuple[list[Resource], int]:
        items = [r for k, r in sorted(self._items.items()) if k.startswith(prefix)]
        return items, self._revision

    async def revision(self) -> int:
        return self._revision

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        if start_revision < self._compact_revision:
            raise CompactedError(self._compact_revision, start_revision)
        await super().check_resume(start_revision)  # one process: no other history

    async def cluster_id(self) -> str:
        return self._cluster_id

    # --- writes -------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        key = resource.key
        current = self._items.get(key)
        self._check_expected(key, current, expected_revision)
        check_references(resource, self._items.get)
        check_group_update(resource, current, lambda: self._candidates(key))
        rev = self._store(resource, current)
        async with self._changed:
            self._changed.notify_all()
        return rev

    async def apply(self, resources: Sequence[Resource]) -> builtins.list[ApplyResult]:
        # No await between the checks and the last write: atomic under asyncio.
        steps = plan_apply(resources, self._items.get, self._candidates)
        results = []
        for step in steps:
            if not step.changed:
                assert step.current is not None
                results.append(ApplyResult(step.resource.key, "unchanged",
                                           step.current.mod_revision))
                continue
            rev = self._store(step.resource, step.current)
            results.append(ApplyResult(step.resource.key, step.outcome, rev))
        async with self._changed:
            self._changed.notify_all()
        return results

    def _store(self, resource: Resource, current: Resource | None) -> int:
        """Write one version and log its event, without waking watchers."""
        rev = self._next_revision()
        stored = resource.with_revisions(current.create_revision if current else rev, rev)
        self._items[resource.key] = stored
        self._log(Event(type=EventType.PUT, key=resource.key, revision=rev, resource=stored))
        return rev

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        current = self._items.get(key)
        if current is None:
            raise NotFoundError(key) if expected_revision is None else ConflictError(
                key, expected_revision, 0
            )
        self._check_expected(key, current, expected_revision)
        if cascade:
            for dep in cascade_plan(key, self._candidates(key)):
                if dep.key in self._items:
                    await self._delete_one(dep.key)
        else:
            refuse_if_referenced(key, self._candidates(key))
        return await self._delete_one(key)

    async def _delete_one(self, key: str) -> int:
        last = self._items.pop(key)
        rev = self._next_revision()
        await self._append(Event(type=EventType.DELETE, key=key, revision=rev, resource=last))
        return rev

    async def compact(self, revision: int) -> None:
        self._compact_to(revision)

    def _compact_to(self, revision: int) -> None:
        revision = min(revision, self._revision)
        if revision <= self._compact_revision:
            return
        cut = bisect.bisect_left(self._event_revs, revision)
        del self._events[:cut]
        del self._event_revs[:cut]
        self._compact_revision = revision

    # --- changes ------------------------------------------------------------

    async def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Event]:
        next_rev = self._revision + 1 if start_revision is None else start_revision
        while not self._closed:
            if next_rev < self._compact_revision:
                raise CompactedError(self._compact_revision, next_rev)
            start = bisect.bisect_left(self._event_revs, next_rev)
            batch = self._events[start:]
            for event in batch:
                next_rev = event.revision + 1
                if event.key.startswith(prefix):
                    yield event
            if not batch:
                async with self._changed:
                    if next_rev > self._revision and not self._closed:
                        await self._changed.wait()

    # --- node registrations ---------------------------------------------------

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        info = NodeInfo(name=name, admin_url=admin_url)
        self._nodes[name] = (info, time.monotonic() + ttl)

        async def refresh() -> None:
            self._nodes[name] = (info, time.monotonic() + ttl)

        async def revoke() -> None:
            if self._nodes.get(name, (None,))[0] == info:
                del self._nodes[name]

        return NodeLease(info=info, ttl=ttl, refresh=refresh, revoke=revoke)

    async def list_nodes(self) -> builtins.list[NodeInfo]:
        now = time.monotonic()
        return [info for name, (info, exp) in sorted(self._nodes.items()) if exp > now]

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    # --- internals ------------------------------------------------------------

    def _check_expected(self, key: str, current: Resource | None, expected: int | None) -> None:
        if expected is None:
            return
        actual = current.mod_revision if current else 0
        if actual != expected:
            raise ConflictError(key, expected, actual)

    def _candidates(self, key: str) -> builtins.list[Resource]:
        prefixes = tuple(dependent_candidates_prefixes(key))
        return [r for k, r in self._items.items() if k.startswith(prefixes)]

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def _log(self, event: Event) -> None:
        self._events.append(event)
        self._event_revs.append(event.revision)
        if len(self._events) > self._history_limit:
            self._compact_to(self._events[-self._history_limit].revision)

    async def _append(self, event: Event) -> None:
        self._log(event)
        async with self._changed:
            self._changed.notify_all()
