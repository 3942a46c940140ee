"""One listing of the registry, kept while the registry's revision stays the same.

The console polls the cluster view and pages through the schema; each of those
needs the registry's listing (for its digest, counts per kind or one page).
Listing 100,000 resources for every poll would cost the server a second each
time, so :class:`SnapshotCache` lists once per revision: a request first asks
the registry for its revision (cheap on every backend) and reuses the listing
taken at that revision. The answer is the same as a fresh listing: an
unchanged revision means nothing was written.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import Resource, digest_of
from ..registry import Registry

DEFAULT_PAGE_SIZE = 100
"""Resources per page when a paged request names no ``limit``."""

MAX_PAGE_SIZE = 1000
"""Largest ``limit`` a paged request may ask for."""


@dataclass
class Snapshot:
    """The registry's resources at one revision, sorted by key.

    :param items: the resources, sorted by key.
    :param revision: the registry revision of the listing.
    """

    items: list[Resource]
    revision: int
    keys: list[str] = field(init=False)
    _digest: str | None = field(default=None, init=False)
    _kinds: dict[str, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.items.sort(key=lambda r: r.key)
        self.keys = [r.key for r in self.items]

    @property
    def digest(self) -> str:
        """The digest of the listing (computed once)."""
        if self._digest is None:
            self._digest = digest_of(self.items)
        return self._digest

    @property
    def kinds(self) -> dict[str, int]:
        """Resources per kind, sorted by kind (computed once)."""
        if self._kinds is None:
            counts = Counter(r.kind for r in self.items)
            self._kinds = dict(sorted(counts.items()))
        return self._kinds

    def page(self, prefix: str = "", after: str | None = None, limit: int = DEFAULT_PAGE_SIZE,
             keep: Callable[[Resource], bool] | None = None) -> Page:
        """Up to ``limit`` resources under ``prefix`` whose key sorts after ``after``.

        :param prefix: key prefix (default ``""``: every resource).
        :param after: the last key of the previous page (default ``None``: from the start).
        :param limit: most resources returned (default :data:`DEFAULT_PAGE_SIZE`).
        :param keep: a further filter (default ``None``: keep all); with one, the
            total is counted by scanning the prefix range.
        """
        start = bisect.bisect_left(self.keys, prefix)
        end = (bisect.bisect_left(self.keys, _prefix_end(prefix)) if prefix
               else len(self.keys))
        first = start if after is None else max(start, bisect.bisect_right(self.keys, after))
        if keep is None:
            chosen = self.items[first:min(end, first + limit)]
            more = first + limit < end
            return Page(chosen, self.revision, end - start,
                        chosen[-1].key if more and chosen else None)
        total = sum(1 for r in self.items[start:end] if keep(r))
        chosen = []
        index = first
        while index < end and len(chosen) < limit:
            if keep(self.items[index]):
                chosen.append(self.items[index])
            index += 1
        more = any(keep(r) for r in self.items[index:end])
        return Page(chosen, self.revision, total, chosen[-1].key if more and chosen else None)


def _prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class Page:
    """One page of a listing.

    :param items: the resources of the page.
    :param revision: the registry revision of the listing.
    :param total: resources matching the request on every page.
    :param next_after: the key to continue after, or ``None`` on the last page.
    """

    items: list[Resource]
    revision: int
    total: int
    next_after: str | None


class SnapshotCache:
    """Lists the registry at most once per revision.

    :param registry: the registry listed.
    """

    def __init__(self, registry: Registry):
        self.registry = registry
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Snapshot:
        """The listing at the registry's current revision."""
        async with self._lock:
            current = self._snapshot
            if current is not None and await self.registry.revision() == current.revision:
                return current
            items, revision = await self.registry.list()
            self._snapshot = Snapshot(items, revision)
            return self._snapshot
