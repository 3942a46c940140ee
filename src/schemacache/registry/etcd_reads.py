"""What the etcd registry reads: resources, listings at one revision, the
revisions, the cluster's identity; and compaction.

A listing is paged (:data:`LIST_PAGE_SIZE` keys per Range request), every page
read at the first page's revision, so it is one consistent snapshot; one that
races a compaction starts again at the newest revision.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from aetcd import rpc

from .._gc import gc_paused
from ..errors import (
    CompactedError,
    NotFoundError,
    RegistryPermissionError,
    RegistryRewoundError,
    RegistryUnavailableError,
)
from ..model import EventType, Resource
from .etcd_calls import EtcdCalls
from .etcd_keys import EtcdKeys, prefix_end
from .history import change_mark, marked_change

__all__ = ["LIST_PAGE_SIZE", "MAX_LIST_ATTEMPTS", "EtcdReads"]

LIST_PAGE_SIZE = 5_000
"""Keys fetched per Range request of a listing (pages share one revision)."""
MAX_LIST_ATTEMPTS = 50
"""Listings started again after racing a compaction before a listing gives up."""


class EtcdReads:
    """Reads of one registry's keys.

    :param calls: the registry's calls to etcd.
    :param keys: the registry's key layout.
    """

    def __init__(self, calls: EtcdCalls, keys: EtcdKeys) -> None:
        self._calls = calls
        self._keys = keys

    async def get(self, key: str) -> Resource:
        resp = await self._calls.read("kvstub.Range",
                                      rpc.RangeRequest(key=self._keys.schema_key(key)))
        if not resp.kvs:
            raise NotFoundError(key)
        return self._keys.decode(resp.kvs[0])

    async def list(self, prefix: str = "") -> tuple[builtins.list[Resource], int]:
        for _ in range(MAX_LIST_ATTEMPTS):
            try:
                return await self._list_at_one_revision(prefix)
            except CompactedError:
                continue  # compacted between two pages: start again at the newest revision
        raise RegistryUnavailableError(f"listing {prefix!r} kept racing compaction")

    async def _list_at_one_revision(self, prefix: str) -> tuple[builtins.list[Resource], int]:
        start = self._keys.schema_key(prefix)
        revision = 0
        items: builtins.list[Resource] = []
        async for resp in self._pages(start, prefix_end(start)):
            revision = revision or int(resp.header.revision)
            with gc_paused():
                items.extend(self._keys.decode(kv) for kv in resp.kvs)
        return items, revision

    async def read_prefixes(
        self, prefixes: builtins.list[str]
    ) -> tuple[builtins.list[Any], int]:
        """Every KeyValue under ``prefixes``, all read at one revision, and that revision."""
        revision = 0
        kvs: builtins.list[Any] = []
        for prefix in prefixes:
            start = self._keys.schema_key(prefix)
            async for resp in self._pages(start, prefix_end(start), revision):
                revision = revision or int(resp.header.revision)
                kvs.extend(resp.kvs)
        return kvs, revision

    async def _pages(self, start: bytes, end: bytes, revision: int = 0) -> AsyncIterator[Any]:
        """The Range responses covering ``[start, end)``, page by page, all read at
        ``revision`` (default 0: the first page's)."""
        while True:
            resp = await self.range_at(start, end, LIST_PAGE_SIZE, revision)
            revision = revision or int(resp.header.revision)
            yield resp
            if not resp.more or not resp.kvs:
                return
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def range_at(self, start: bytes, end: bytes, limit: int = 0, revision: int = 0) -> Any:
        """One Range read of ``[start, end)``: at most ``limit`` keys (default 0: all)
        as of ``revision`` (default 0: the newest)."""
        return await self._calls.read("kvstub.Range", rpc.RangeRequest(
            key=start, range_end=end, limit=limit, revision=revision))

    async def revision(self) -> int:
        resp = await self._calls.read(
            "kvstub.Range", rpc.RangeRequest(key=self._keys.schema_root, count_only=True))
        return int(resp.header.revision)

    async def revisions(self) -> tuple[int, int | None]:
        resp = await self._calls.read("kvstub.Range",
                                      rpc.RangeRequest(key=self._keys.schema_mark))
        schema = int(resp.kvs[0].mod_revision) if resp.kvs else None
        return int(resp.header.revision), schema

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        current = await self.revision()
        if start_revision - 1 > current:
            raise RegistryRewoundError(current, start_revision - 1)
        if start_revision <= current:
            # A read at a compacted revision fails as a watch from it would.
            await self._calls.read("kvstub.Range", rpc.RangeRequest(
                key=self._keys.schema_root, count_only=True, revision=start_revision))
        if mark and start_revision > 1:
            seen = start_revision - 1
            try:
                found = await self._mark_at(seen, mark)
            except CompactedError:
                return  # that history is gone: nothing left to tell it by
            if found != mark:
                raise RegistryRewoundError(current, seen, diverged=True)

    async def _mark_at(self, revision: int, mark: str) -> str | None:
        """The mark of the change at ``revision`` to the key ``mark`` names, if that
        key changed there (``None``: it did not, so the change there is another)."""
        kind, key = marked_change(mark)
        at = await self._version_at(key, revision)
        if kind == EventType.PUT:
            return change_mark(kind, key, self._keys.decode(at)) if (
                at is not None and at.mod_revision == revision) else None
        before = await self._version_at(key, revision - 1) if at is None else None
        return change_mark(kind, key, self._keys.decode(before)) if before is not None else None

    async def _version_at(self, key: str, revision: int) -> Any:
        """The KeyValue of ``key`` as of ``revision`` (``None``: absent then)."""
        resp = await self._calls.read("kvstub.Range", rpc.RangeRequest(
            key=self._keys.schema_key(key), revision=revision))
        return resp.kvs[0] if resp.kvs else None

    async def cluster_id(self) -> str:
        resp = await self._calls.read(
            "kvstub.Range", rpc.RangeRequest(key=self._keys.schema_root, count_only=True))
        return f"{resp.header.cluster_id:016x}"

    async def compact(self, revision: int) -> None:
        revision = min(revision, await self.revision())
        if revision <= 0:
            return
        try:
            await self._calls.unary(
                "kvstub.Compact", rpc.CompactionRequest(revision=revision, physical=True)
            )
        except CompactedError:
            pass  # already compacted at or past this revision
        except RegistryPermissionError as exc:
            raise RegistryPermissionError(
                f"etcd {self._calls.url}: permission denied to compact: compaction acts on "
                f"the whole cluster, not one prefix; it needs the root role ({exc})") from None
