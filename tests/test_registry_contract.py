"""The Registry contract, run against every backend (memory, SQLite file, real etcd)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import registry_url
from factories import binding, group, index_rule, measure, stream, topn
from schemacache import (
    CompactedError,
    ConflictError,
    EventType,
    NotFoundError,
    ReferencedError,
    Registry,
    ValidationError,
    open_registry,
)
from schemacache.model import Event
from schemacache.registry.base import WatchProgress

WATCH_DEADLINE = 20.0


async def _take(watch: AsyncIterator[Any], enough: Callable[[Any], bool]) -> None:
    """Iterate ``watch`` until ``enough(item)`` holds (fails after a deadline), then close it."""
    async def run() -> None:
        async for item in watch:
            if enough(item):
                return

    try:
        await asyncio.wait_for(run(), WATCH_DEADLINE)
    finally:
        with contextlib.suppress(Exception):
            await watch.aclose()  # type: ignore[attr-defined]


async def collect(registry: Registry, start: int, count: int, prefix: str = "") -> list[Event]:
    """The first ``count`` events of a watch from ``start`` (fails after a deadline)."""
    events: list[Event] = []

    def enough(event: Event) -> bool:
        events.append(event)
        return len(events) == count

    await _take(registry.watch(prefix, start_revision=start), enough)
    return events


async def test_cas_create_update_delete(registry: Registry) -> None:
    g = group("g1")
    rev1 = await registry.put(g, expected_revision=0)
    with pytest.raises(ConflictError) as first:
        await registry.put(g, expected_revision=0)
    assert (first.value.expected, first.value.actual) == (0, rev1)
    stored = await registry.get("group/g1")
    assert stored.mod_revision == rev1 and stored.create_revision == rev1
    assert stored.metadata.updated_at is not None

    rev2 = await registry.put(g, expected_revision=rev1)
    assert rev2 > rev1
    with pytest.raises(ConflictError) as err:
        await registry.put(g, expected_revision=rev1)
    assert err.value.actual == rev2
    again = await registry.get("group/g1")
    assert (again.create_revision, again.mod_revision) == (rev1, rev2)

    with pytest.raises(ConflictError):
        await registry.delete("group/g1", expected_revision=rev1)
    with pytest.raises(ConflictError):
        await registry.put(group("absent"), expected_revision=5)
    rev3 = await registry.delete("group/g1", expected_revision=rev2)
    assert rev3 > rev2
    with pytest.raises(NotFoundError):
        await registry.get("group/g1")
    with pytest.raises(NotFoundError):
        await registry.delete("group/g1")


async def test_list_is_a_snapshot_sorted_by_key(registry: Registry) -> None:
    await registry.put(group("b"))
    await registry.put(group("a"))
    rev = await registry.put(measure("a", "m"))
    items, list_rev = await registry.list()
    assert [r.key for r in items] == ["group/a", "group/b", "measure/a/m"]
    assert list_rev == rev == await registry.revision()
    only, _ = await registry.list("measure/")
    assert [r.key for r in only] == ["measure/a/m"]


async def test_stored_listing_is_the_listing_as_text(registry: Registry) -> None:
    await registry.put(group("b"))
    await registry.put(group("a"))
    await registry.put(measure("a", "m"))
    items, rev = await registry.list()
    stored, stored_rev = await registry.list_stored()
    assert stored_rev == rev
    assert [key for key, _ in stored] == [r.key for r in items]
    for (_, record), resource in zip(stored, items, strict=True):
        assert record.mod_revision == resource.mod_revision
        assert record.model() == resource and record.model().to_dict() == resource.to_dict()
    only, _ = await registry.list_stored("measure/")
    assert [key for key, _ in only] == ["measure/a/m"]
    assert (await registry.list_stored("nothing/"))[0] == []


async def test_watch_from_list_revision_sees_every_later_write_once_in_order(
    registry: Registry,
) -> None:
    await registry.put(group("g"))
    await registry.put(measure("g", "m0"))
    _, rev = await registry.list()
    writes = []
    for i in range(1, 6):
        writes.append(("PUT", f"measure/g/m{i}", await registry.put(measure("g", f"m{i}"))))
    writes.append(("PUT", "measure/g/m0", await registry.put(measure("g", "m0", fields=("v2",)))))
    writes.append(("DELETE", "measure/g/m1", await registry.delete("measure/g/m1")))
    events = await collect(registry, rev + 1, len(writes))
    assert [(e.type.value, e.key, e.revision) for e in events] == writes
    assert events[-1].type == EventType.DELETE
    assert events[-1].resource.name == "m1"  # a delete carries the last version
    assert events[-2].resource.spec["fields"][0]["name"] == "v2"
    assert events[-2].resource.mod_revision == events[-2].revision


async def collect_batches(registry: Registry, start: int, count: int) -> list[list[Event]]:
    """The batches of ``watch_batches`` from ``start`` until they held ``count``
    events (fails after a deadline)."""
    batches: list[list[Event]] = []

    def enough(item: Sequence[Event] | WatchProgress) -> bool:
        if not isinstance(item, WatchProgress):
            batches.append(list(item))
        return sum(map(len, batches)) >= count

    await _take(registry.watch_batches("", start_revision=start), enough)
    return batches


async def test_watch_batches_hold_the_watch_events_in_order(registry: Registry) -> None:
    await registry.put(group("g"))
    start = await registry.revision() + 1
    for i in range(6):
        await registry.put(measure("g", f"m{i}"))
    await registry.apply([measure("g", "m0", fields=("v2",)), measure("g", "m6")])
    await registry.delete("measure/g/m2")
    expected = await collect(registry, start, 9)
    batches = await collect_batches(registry, start, 9)
    assert all(batches), "no empty batch"
    assert [e for b in batches for e in b] == expected
    assert [e.revision for e in expected] == sorted(e.revision for e in expected)


async def test_watch_filters_by_prefix_and_waits_for_future_writes(registry: Registry) -> None:
    await registry.put(group("g"))
    start = await registry.revision() + 1
    task = asyncio.create_task(collect(registry, start, 2, prefix="measure/"))
    await registry.put(index_rule("g", "r"))
    r1 = await registry.put(measure("g", "m1"))
    await registry.put(stream_group := group("s", "STREAM"))
    assert stream_group.key == "group/s"
    r2 = await registry.put(measure("g", "m2"))
    events = await task
    assert [(e.key, e.revision) for e in events] == [("measure/g/m1", r1), ("measure/g/m2", r2)]


async def test_watch_after_compaction_raises_compacted(registry: Registry) -> None:
    await registry.put(group("g"))
    revs = [await registry.put(measure("g", f"m{i}")) for i in range(5)]
    await registry.compact(revs[3])
    with pytest.raises(CompactedError) as err:
        await collect(registry, revs[0], 1)
    assert err.value.compact_revision == revs[3]
    # History from the compact revision on is still there.
    events = await collect(registry, revs[3], 2)
    assert [e.revision for e in events] == revs[3:]


async def test_references_are_enforced(registry: Registry) -> None:
    with pytest.raises(ValidationError) as err:
        await registry.put(measure("nogroup", "m"))
    assert err.value.field == "metadata.group"
    await registry.put(group("streams", "STREAM"))
    with pytest.raises(ValidationError, match="catalog"):
        await registry.put(measure("streams", "m"))
    await registry.put(group("g"))
    await registry.put(measure("g", "m"))
    with pytest.raises(ValidationError) as err:
        await registry.put(binding("g", "b", ["missing_rule"], "m"))
    assert err.value.field == "spec.rules[0]"
    await registry.put(index_rule("g", "r"))
    with pytest.raises(ValidationError) as err:
        await registry.put(binding("g", "b", ["r"], "other"))
    assert err.value.field == "spec.subject"
    await registry.put(binding("g", "b", ["r"], "m"))
    with pytest.raises(ValidationError) as err:
        await registry.put(topn("g", "t", "g", "m", field="nope"))
    assert err.value.field == "spec.field_name"
    before = await registry.revision()
    with pytest.raises(ValidationError):
        await registry.put(topn("g", "t", "g", "missing"))
    assert await registry.revision() == before  # a refused write writes nothing


async def test_delete_of_referenced_key_is_refused_unless_cascade(registry: Registry) -> None:
    await registry.put(group("g"))
    await registry.put(group("other"))
    await registry.put(measure("g", "m"))
    await registry.put(index_rule("g", "r"))
    await registry.put(binding("g", "b", ["r"], "m"))
    await registry.put(topn("other", "t", "g", "m"))
    await registry.put(stream_in_other := measure("other", "keep"))
    for key in ("group/g", "measure/g/m", "index_rule/g/r"):
        with pytest.raises(ReferencedError) as err:
            await registry.delete(key)
        assert err.value.dependents
    before = await registry.revision()
    final = await registry.delete("group/g", cascade=True)
    # Dependents first, each its own write, then the group.
    events = await collect(registry, before + 1, 5)
    assert [e.key for e in events] == [
        "index_rule_binding/g/b", "topn_aggregation/other/t", "index_rule/g/r", "measure/g/m",
        "group/g",
    ]
    assert all(e.type == EventType.DELETE for e in events)
    assert events[-1].revision == final
    items, _ = await registry.list()
    assert [r.key for r in items] == ["group/other", stream_in_other.key]


async def test_group_catalog_cannot_change_under_members(registry: Registry) -> None:
    await registry.put(group("g"))
    await registry.put(measure("g", "m"))
    with pytest.raises(ValidationError) as err:
        await registry.put(group("g", "STREAM"))
    assert err.value.field == "spec.catalog"
    await registry.put(group("empty"))
    await registry.put(group("empty", "STREAM"))
    await registry.put(stream("empty", "s"))


async def test_concurrent_writers_get_gap_free_revisions(registry: Registry) -> None:
    await registry.put(group("g"))
    start = await registry.revision()
    revs = await asyncio.gather(*(registry.put(index_rule("g", f"r{i}")) for i in range(1000)))
    assert sorted(revs) == list(range(start + 1, start + 1001))
    items, rev = await registry.list("index_rule/")
    assert len(items) == 1000 and rev == start + 1000
    assert {r.mod_revision for r in items} == set(revs)


async def test_concurrent_cas_has_one_winner(registry: Registry) -> None:
    rev = await registry.put(group("g"))
    results = await asyncio.gather(
        *(registry.put(group("g"), expected_revision=rev) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 9


async def test_cluster_id_is_stable(registry: Registry) -> None:
    first = await registry.cluster_id()
    await registry.put(group("g"))
    assert first and await registry.cluster_id() == first


async def test_node_registrations_live_apart_from_schema(registry: Registry) -> None:
    lease = await registry.register_node("n1", "http://127.0.0.1:1", ttl=30)
    await registry.register_node("n0", "http://127.0.0.1:2", ttl=30)
    assert [n.name for n in await registry.list_nodes()] == ["n0", "n1"]
    items, _ = await registry.list()
    assert items == []  # node registrations are not schema
    await lease.refresh()
    await lease.revoke()
    assert [n.name for n in await registry.list_nodes()] == ["n0"]


async def test_node_registration_expires_without_refresh(registry: Registry) -> None:
    await registry.register_node("short", "http://127.0.0.1:3", ttl=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(n.name == "short" for n in await registry.list_nodes()):
        assert loop.time() < deadline, "registration did not expire"
        await asyncio.sleep(0.1)


def test_a_registry_serves_one_event_loop_after_another(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A script may call asyncio.run more than once with one registry object.
    registry = open_registry(registry_url(backend, tmp_path, request))

    created = 0

    async def first() -> None:
        nonlocal created
        created = await registry.put(group("g"))

    async def second() -> tuple[int, list[Event]]:
        try:
            rev = await registry.put(measure("g", "m"))
            return rev, await collect(registry, created, 2)
        finally:
            await registry.close()

    asyncio.run(first())
    rev, events = asyncio.run(second())
    assert rev == created + 1
    assert [(e.key, e.revision) for e in events] == [("group/g", created),
                                                     ("measure/g/m", rev)]
