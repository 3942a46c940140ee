"""The etcd registry against real etcd processes (single member and a 3-member cluster)."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aetcd
import pytest
from aetcd import rpc

from etcd_server import EtcdCluster
from schemacache import (
    CompactedError,
    Event,
    EventType,
    NotFoundError,
    ReferencedError,
    RegistryRewoundError,
    RegistryUnavailableError,
    Resource,
    ValidationError,
    load_resources,
    open_registry,
)
from schemacache.kinds import apply_order, level
from schemacache.registry.etcd import EtcdRegistry
from schemacache.registry.history import event_mark

pytestmark = pytest.mark.etcd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WAIT = 15.0
LARGE_LISTING = 20_000
TXN_OPS = 128  # etcd's default --max-txn-ops


def group(name: str, catalog: str = "MEASURE", shards: int = 1) -> Resource:
    return Resource.parse({
        "kind": "group",
        "metadata": {"name": name},
        "spec": {"catalog": catalog, "resource_opts": {
            "shard_num": shards,
            "segment_interval": {"unit": "DAY", "num": 1},
            "ttl": {"unit": "DAY", "num": 7},
        }},
    })


def rule(grp: str, name: str) -> Resource:
    return Resource.parse({
        "kind": "index_rule",
        "metadata": {"group": grp, "name": name},
        "spec": {"tags": ["service_id"], "type": "INVERTED"},
    })


async def wait_for(predicate: Any, limit: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def collect(reg: Any, start: int, until_rev: int, prefix: str = "",
                  count: int | None = None) -> list[Event]:
    """Watch from ``start`` until an event at ``until_rev`` or later arrives
    (or, with ``count``, until that many events arrived)."""
    events: list[Event] = []
    async with asyncio.timeout(WAIT):
        async for ev in reg.watch(prefix, start):
            events.append(ev)
            if len(events) == count or (count is None and ev.revision >= until_rev):
                break
    return events


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster() as cluster:
        yield cluster


@pytest.fixture
async def reg(etcd: EtcdCluster) -> AsyncIterator[Any]:
    registry = open_registry(etcd.url(f"t-{uuid.uuid4().hex[:10]}"))
    try:
        yield registry
    finally:
        await registry.close()


# --------------------------------------------------------------------- single member


# CAS create/update/delete conflicts: see the contract suite (test_registry_contract.py).


async def test_list_then_watch_sees_each_later_write_once_in_order(reg: Any) -> None:
    for i in range(5):
        await reg.put(group(f"g{i}"))
    lease = await reg.register_node("n1", "http://127.0.0.1:1")  # not schema: never watched
    items, rev = await reg.list()
    assert [r.key for r in items] == [f"group/g{i}" for i in range(5)]
    assert rev == await reg.revision()

    watcher = asyncio.create_task(collect(reg, rev + 1, until_rev=rev + 13))
    expected: list[tuple[str, str, int]] = []
    for i in range(5, 10):
        expected.append(("PUT", f"group/g{i}", await reg.put(group(f"g{i}"))))
    for i in range(5):
        expected.append(("PUT", f"index_rule/g{i}/r", await reg.put(rule(f"g{i}", "r"))))
    for key in ("index_rule/g0/r", "group/g0", "group/g9"):
        expected.append(("DELETE", key, await reg.delete(key)))
    await lease.revoke()
    events = await watcher

    assert [(e.type.value, e.key, e.revision) for e in events] == expected
    assert all(a.revision < b.revision for a, b in itertools.pairwise(events))
    for ev in events:
        assert ev.resource.key == ev.key
        if ev.type is EventType.PUT:
            assert ev.resource.mod_revision == ev.revision
        else:  # a DELETE carries the last version
            assert ev.resource.mod_revision < ev.revision

    rules = await collect(reg, rev + 1, until_rev=expected[9][2], prefix="index_rule/")
    assert [e.key for e in rules] == [f"index_rule/g{i}/r" for i in range(5)]


async def _true(value: bool) -> bool:
    return value


async def test_compaction_raises_compacted_error(reg: Any) -> None:
    revs = [await reg.put(group(f"c{i}")) for i in range(6)]
    await reg.compact(revs[3])
    with pytest.raises(CompactedError) as exc:
        async for _ in reg.watch("", revs[1]):
            pass
    assert exc.value.compact_revision == revs[3]
    # etcd keeps the compact revision itself: watching from it still works
    events = await collect(reg, revs[3], until_rev=revs[5])
    assert [e.revision for e in events] == revs[3:]
    await reg.compact(revs[2])  # older than the last compaction: a no-op
    items, _ = await reg.list()
    assert len(items) == 6


async def test_references_and_cascade_delete(reg: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        await reg.put(rule("nope", "r"))
    assert exc.value.field == "metadata.group"

    examples = apply_order(load_resources(EXAMPLES))
    for res in examples:
        await reg.put(res, expected_revision=0)
    stream_group = group("sw_stream", catalog="STREAM")
    with pytest.raises(ValidationError):  # catalog cannot change while members exist
        await reg.put(group("sw_stream", catalog="MEASURE"))
    await reg.put(stream_group)  # same catalog: fine

    with pytest.raises(ReferencedError) as ref:
        await reg.delete("group/sw_stream")
    assert ref.value.dependents
    with pytest.raises(ReferencedError):
        await reg.delete("index_rule/sw_stream/trace_id")

    members = [r.key for r in examples if r.group == "sw_stream"]
    _, before = await reg.list()
    last = await reg.delete("group/sw_stream", cascade=True)
    deletes = await collect(reg, before + 1, until_rev=last, count=len(members) + 1)
    assert all(e.type is EventType.DELETE for e in deletes)
    assert sorted(e.key for e in deletes) == sorted([*members, "group/sw_stream"])
    levels = [level(e.key.split("/")[0]) for e in deletes]
    assert levels == sorted(levels, reverse=True)  # dependents first
    # One etcd transaction: the whole cascade shares one revision.
    assert {e.revision for e in deletes} == {last} and last == before + 1
    items, _ = await reg.list()
    assert not [r for r in items if r.key.startswith(("group/sw_stream", "stream/"))]


async def test_delete_never_orphans_a_concurrently_created_dependent(reg: Any) -> None:
    """A member created while its group is being deleted either wins (the delete
    is refused) or loses (its reference check fails); never both succeed."""
    for i in range(15):
        await reg.put(group(f"race{i}"))
        results = await asyncio.gather(
            reg.delete(f"group/race{i}"), reg.put(rule(f"race{i}", "r")),
            return_exceptions=True,
        )
        ok = [not isinstance(r, BaseException) for r in results]
        assert ok.count(True) == 1, results
        for r in results:
            if isinstance(r, BaseException):
                assert isinstance(r, ReferencedError | ValidationError), r
    items, _ = await reg.list()
    keys = {r.key for r in items}
    for r in items:
        if r.group:
            assert f"group/{r.group}" in keys


async def test_node_lease_expires_refresh_reregisters_revoke_removes(reg: Any) -> None:
    lease = await reg.register_node("n1", "http://127.0.0.1:9", ttl=1)
    await reg.register_node("n0", "http://127.0.0.1:8", ttl=30)
    assert [n.name for n in await reg.list_nodes()] == ["n0", "n1"]
    assert (await reg.list())[0] == []  # registrations are not schema

    async def n1_gone() -> bool:
        return "n1" not in [n.name for n in await reg.list_nodes()]

    await wait_for(n1_gone, what="lease expiry")
    await lease.refresh()  # expired: registers again
    assert [n.admin_url for n in await reg.list_nodes()] == ["http://127.0.0.1:8",
                                                             "http://127.0.0.1:9"]
    await lease.refresh()
    assert not await n1_gone()
    await lease.revoke()
    assert await n1_gone()


async def test_revisions_name_the_last_schema_write_not_other_keys(reg: Any) -> None:
    """The cluster-wide revision counts node registrations; the schema revision
    read with it is the last schema write's (put, apply, delete, cascade)."""
    _, before = await reg.revisions()
    assert before is None  # nothing written yet: the registry cannot tell
    written = await reg.put(group("g"))
    await reg.register_node("n", "http://127.0.0.1:9", ttl=30)
    cluster, schema = await reg.revisions()
    assert schema == written and cluster > written
    [result] = await reg.apply([rule("g", "r")])
    assert (await reg.revisions())[1] == result.revision
    deleted = await reg.delete("group/g", cascade=True)
    assert (await reg.revisions())[1] == deleted
    # A refused write moves nothing.
    with pytest.raises(NotFoundError):
        await reg.delete("group/g")
    assert (await reg.revisions())[1] == deleted
    assert [r.key for r in (await reg.list())[0]] == []  # the mark is no resource


async def test_resuming_checks_the_change_seen_at_the_resume_point(reg: Any) -> None:
    """``check_resume(start, mark)``: the mark of the change a watcher saw at
    ``start - 1`` (a put or a delete) passes; a mark the registry's change there
    does not carry (another commit time: a restored history written past it, or
    another key) is a rewind that diverged."""
    await reg.put(group("g"))
    put_rev = await reg.put(rule("g", "r"))
    del_rev = await reg.delete(rule("g", "r").key)
    events = await collect(reg, put_rev, del_rev)
    put, delete = events[-2], events[-1]
    assert (put.revision, delete.revision) == (put_rev, del_rev)
    await reg.check_resume(put_rev + 1, event_mark(put))
    await reg.check_resume(del_rev + 1, event_mark(delete))
    other_time = event_mark(put).rsplit(" ", 1)[0] + " 2000-01-01T00:00:00+00:00"
    for start, mark in ((put_rev + 1, other_time), (del_rev + 1, event_mark(put)),
                        (put_rev + 1, "PUT group/g 2000-01-01T00:00:00+00:00")):
        with pytest.raises(RegistryRewoundError) as refused:
            await reg.check_resume(start, mark)
        assert refused.value.diverged and refused.value.seen == start - 1


async def test_cluster_id_is_stable_and_differs_per_cluster(etcd: EtcdCluster, reg: Any) -> None:
    cid = await reg.cluster_id()
    assert cid and cid == await reg.cluster_id()
    other = open_registry(etcd.url("another-prefix"))
    try:
        assert await other.cluster_id() == cid
    finally:
        await other.close()
    with EtcdCluster() as fresh:
        fresh_reg = open_registry(fresh.url("x"))
        try:
            assert await fresh_reg.cluster_id() != cid
        finally:
            await fresh_reg.close()


async def test_unreachable_registry_raises_unavailable() -> None:
    with EtcdCluster() as gone:
        endpoints = gone.endpoints
    reg = EtcdRegistry(endpoints, prefix="x", timeout=0.5)
    try:
        with pytest.raises(RegistryUnavailableError):
            await reg.get("group/g")
        with pytest.raises(RegistryUnavailableError):
            await reg.put(group("g"))
    finally:
        await reg.close()
    await reg.close()  # idempotent
    with pytest.raises(RegistryUnavailableError):
        await reg.revision()


async def test_close_ends_a_running_watch(etcd: EtcdCluster) -> None:
    reg = open_registry(etcd.url(f"t-{uuid.uuid4().hex[:10]}"))
    start = await reg.revision() + 1
    got: list[Event] = []

    async def watch() -> None:
        async for ev in reg.watch("", start):
            got.append(ev)

    task = asyncio.create_task(watch())
    await reg.put(group("g"))
    await wait_for(lambda: _true(len(got) == 1), what="the first event")
    await reg.close()
    await asyncio.wait_for(task, WAIT)  # ends quietly, no error
    with pytest.raises(RegistryUnavailableError):
        await reg.get("group/g")


async def test_large_listing_in_one_call(etcd: EtcdCluster) -> None:
    prefix = f"big-{uuid.uuid4().hex[:8]}"
    value = group("x").to_json()
    host, port = etcd.endpoints[0].split(":")
    async with aetcd.Client(host=host, port=int(port)) as raw:
        for start in range(0, LARGE_LISTING, TXN_OPS):
            puts = [
                raw.transactions.put(
                    f"/{prefix}/schema/group/g{i:06d}".encode(),
                    value.replace('"name":"x"', f'"name":"g{i:06d}"').encode(),
                )
                for i in range(start, min(start + TXN_OPS, LARGE_LISTING))
            ]
            await raw.transaction(compare=[], success=puts, failure=[])
    reg = open_registry(etcd.url(prefix))
    try:
        t0 = time.monotonic()
        items, rev = await reg.list()
        elapsed = time.monotonic() - t0
        assert len(items) == LARGE_LISTING
        assert [r.name for r in items[:2]] == ["g000000", "g000001"]
        assert [r.key for r in items] == sorted(r.key for r in items)
        assert rev == max(r.mod_revision for r in items)
        print(f"listed {LARGE_LISTING} keys in {elapsed:.2f}s")
    finally:
        await reg.close()


# --------------------------------------------------------------------- 3-member cluster


def _watch_streams(cluster: EtcdCluster, index: int) -> float:
    """Open watch streams on a member, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{cluster.client_url(index)}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
                return float(line.split()[1])
    raise AssertionError("watch stream gauge not found")


async def _make_leader(cluster: EtcdCluster, index: int) -> None:
    """Move raft leadership to member ``index`` (etcd's MoveLeader) and wait for it."""
    clients = []
    try:
        for ep in cluster.endpoints:
            host, port = ep.split(":")
            client = aetcd.Client(host=host, port=int(port), timeout=5)
            await client.connect()
            clients.append(client)

        async def status(i: int) -> Any:
            return await clients[i].maintenancestub.Status(rpc.StatusRequest(), timeout=5)

        ids = [(await status(i)).header.member_id for i in range(len(clients))]
        leader = (await status(index)).leader
        if leader != ids[index]:
            await clients[ids.index(leader)].maintenancestub.MoveLeader(
                rpc.MoveLeaderRequest(targetID=ids[index]), timeout=5
            )

        async def moved() -> bool:
            return all([(await status(i)).leader == ids[index] for i in range(len(clients))])

        await wait_for(moved, what=f"member {index} to lead")
    finally:
        for client in clients:
            await client.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("role", ["leader", "follower"])
async def test_failover_keeps_writes_and_watch_exact(role: str) -> None:
    """SIGKILL the member the client is connected to during writes and a watch.

    The client's gRPC channel uses pick-first over the endpoint list, so it
    talks to member 0; the test confirms that from each member's open-watch
    gauge before killing it.  ``role`` makes member 0 the raft leader (writes
    stall until a new one is elected) or a follower.
    """
    writers = 4
    per_phase = 40
    with EtcdCluster(size=3) as cluster:
        await _make_leader(cluster, 0 if role == "leader" else 1)
        reg = open_registry(cluster.url("failover"))
        try:
            base = await reg.revision()
            seen: list[Event] = []

            async def watch() -> None:
                async for ev in reg.watch("", base + 1):
                    seen.append(ev)

            watcher = asyncio.create_task(watch())
            written: set[str] = set()
            retried = 0
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                nonlocal retried
                i = 0
                while not stop.is_set():
                    deadline = time.monotonic() + WAIT
                    while True:
                        try:  # distinct keys, unconditional: a repeated put is harmless
                            await reg.put(group(f"w{w}-{i:05d}"))
                            break
                        except RegistryUnavailableError:
                            retried += 1
                            assert time.monotonic() < deadline, "writes did not resume"
                            await asyncio.sleep(0.05)
                    written.add(f"group/w{w}-{i:05d}")
                    i += 1

            tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
            try:
                await wait_for(lambda: _true(len(seen) >= per_phase), what="watch before kill")
                streams = [await asyncio.to_thread(_watch_streams, cluster, i) for i in range(3)]
                assert streams[0] >= 1 and streams[1:] == [0, 0], streams
                cluster.kill(0)  # while the writers are mid-flight
                killed_at = len(written)
                await wait_for(lambda: _true(len(written) >= killed_at + per_phase),
                               what="writes after the kill")
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()

            resumed = [await asyncio.to_thread(_watch_streams, cluster, i) for i in (1, 2)]
            assert sum(resumed) >= 1, resumed  # the watch now runs on a survivor
            final = await reg.revision()
            await wait_for(lambda: _true(bool(seen) and seen[-1].revision >= final),
                           what="the watch to catch up")
            watcher.cancel()
            items, rev = await reg.list()
            assert rev == final

            revs = [e.revision for e in seen]
            assert revs == list(range(base + 1, final + 1)), "missed or repeated events"
            assert {r.key for r in items} == written
            last_by_key = {e.key: e.revision for e in seen}
            assert {r.key: r.mod_revision for r in items} == last_by_key
            print(f"failover ({role}): {retried} write attempts retried; {len(seen)} events, "
                  f"{len(written)} keys")
        finally:
            await reg.close()
