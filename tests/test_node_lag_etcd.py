"""Lag on etcd means "behind the schema": a real etcd shared with another
application's keys, nodes joining and leaving; converged nodes report lag 0
(status, metric, no SchemaCacheLagging) while a node whose handler is blocked
reports its real lag, and progress notifications move applied_revision past
revisions that changed no schema key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etcd_server import EtcdCluster
from factories import group, measure
from polling import until
from schemacache import Node, open_registry
from schemacache.node.node import ALERT_LAGGING
from schemacache.registry import Registry, WatchProgress

PROGRESS_INTERVAL = "200ms"
"""etcd's progress notification interval for this test's member (default 10 min)."""
DEADLINE = 20.0
SLOW_KEY = "measure/g/slow"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    flag = f"--experimental-watch-progress-notify-interval={PROGRESS_INTERVAL}"
    with EtcdCluster(extra_args=(flag,)) as cluster:
        yield cluster


class GatedHandler:
    """Applies everything at once except :data:`SLOW_KEY`, which waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def apply(self, resource: Any) -> None:
        if resource.key == SLOW_KEY:
            await self.gate.wait()

    async def delete(self, resource: Any) -> None:
        return None


async def _until(predicate: Any, what: str) -> None:
    await until(predicate, what, DEADLINE)


def _lag_seen(node: Node) -> tuple[int, float, bool]:
    """What an operator sees of ``node``: status lag, metric lag, lag alert firing."""
    metric = node.metrics.registry.get_sample_value("schemacache_revision_lag")
    firing = any(a["labels"]["alertname"] == ALERT_LAGGING for a in node.alerter.active())
    return node.status()["lag"], metric if metric is not None else -1.0, firing


async def _churn(other: Registry, registry: Registry, tag: str, writes: int) -> None:
    """Another application's writes in the same etcd, and nodes joining and leaving."""
    for i in range(writes):
        await other.put(group(f"{tag}{i}"))
        if i % 25 == 0:
            lease = await registry.register_node(f"visitor-{tag}{i}", "http://127.0.0.1:9/")
            await lease.revoke()


async def test_converged_nodes_show_no_lag_and_a_blocked_node_does(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    prefix = f"lag-{uuid.uuid4().hex[:8]}"
    registry = open_registry(etcd.url(prefix))
    other = open_registry(etcd.url(f"other-app-{uuid.uuid4().hex[:8]}"))
    await registry.put(group("g"))
    await registry.put(measure("g", "m0"))
    node_args: dict[str, Any] = dict(monitor_interval=0.05, lag_alert_revisions=1,
                                     lag_alert_after=0.3, node_ttl=2.0)
    handler = GatedHandler()
    steady = Node(open_registry(etcd.url(prefix)), name="steady", state_dir=tmp_path / "s",
                  admin_url="http://127.0.0.1:9/steady", **node_args)
    slow = Node(open_registry(etcd.url(prefix)), name="slow", state_dir=tmp_path / "b",
                handler=handler, admin_url="http://127.0.0.1:9/slow", **node_args)
    samples: dict[str, list[tuple[int, float, bool]]] = {"steady": [], "slow": []}
    recording = asyncio.Event()

    async def sample() -> None:
        while True:
            if recording.is_set():
                samples["steady"].append(_lag_seen(steady))
                samples["slow"].append(_lag_seen(slow))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        async with steady, slow:
            await steady.ready(DEADLINE)
            await slow.ready(DEADLINE)
            # Both converged: lag 0 once the monitor ran.
            await _until(lambda: _lag_seen(steady)[:2] == (0, 0.0)
                         and _lag_seen(slow)[:2] == (0, 0.0), "converged nodes at lag 0")

            # Phase 1: other tenants' writes and node registrations only.
            recording.set()
            await _churn(other, registry, "a", 150)
            await asyncio.sleep(0.5)  # let the lag alert's 0.3 s window pass
            assert samples["steady"] and samples["slow"]
            for name in ("steady", "slow"):
                bad = [s for s in samples[name] if s != (0, 0.0, False)]
                assert not bad, f"{name} claimed lag with nothing to apply: {bad[:5]}"
            # Progress notifications carried applied_revision past the foreign writes.
            foreign_head = await registry.revision()
            await _until(lambda: steady.applied_revision >= foreign_head,
                         f"steady's applied revision to reach {foreign_head}")
            recording.clear()

            # Phase 2: a real schema change the slow node's handler blocks on.
            written = await registry.put(measure("g", "slow"))
            await _until(lambda: steady.applied_revision >= written, "steady to apply it")
            await _until(lambda: steady.status()["lag"] == 0
                         and _lag_seen(steady)[1] == 0.0, "steady back at lag 0")
            samples["steady"].clear()
            samples["slow"].clear()
            recording.set()
            await _churn(other, registry, "b", 100)
            await _until(lambda: _lag_seen(slow)[2], "the slow node's lag alert")
            recording.clear()
            bad = [s for s in samples["steady"] if s != (0, 0.0, False)]
            assert not bad, f"steady claimed lag while converged: {bad[:5]}"
            # The real lag stays visible on every sample, in status and metric alike.
            assert all(status > 0 for status, _, _ in samples["slow"]), samples["slow"][:5]
            assert slow.applied_revision == written - 1
            status = slow.status()
            assert status["registry_revision"] >= written
            assert status["lag"] == status["registry_revision"] - status["applied_revision"] > 0

            # Unblocked, it converges; the alert resolves and progress catches up.
            handler.gate.set()
            head = await registry.revision()
            await _until(lambda: slow.applied_revision >= head, "the slow node to catch up")
            await _until(lambda: _lag_seen(slow) == (0, 0.0, False), "slow lag 0, no alert")
            assert slow.status()["cache"]["digest"] == steady.status()["cache"]["digest"]
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        for reg in (registry, other, steady.registry, slow.registry):
            await reg.close()


async def test_etcd_progress_marks_follow_every_event_they_cover(etcd: EtcdCluster) -> None:
    prefix = f"mark-{uuid.uuid4().hex[:8]}"
    registry = open_registry(etcd.url(prefix))
    other = open_registry(etcd.url(f"other-{uuid.uuid4().hex[:8]}"))
    try:
        start = await registry.revision() + 1
        written = await registry.put(group("g"))
        for i in range(20):
            await other.put(group(f"x{i}"))
        foreign_head = await other.revision()
        seen: list[Any] = []
        async with asyncio.timeout(DEADLINE):
            async for item in registry.watch_progress("", start_revision=start):
                seen.append(item)
                if isinstance(item, WatchProgress) and item.revision >= foreign_head:
                    break
        assert [(e.key, e.revision) for e in seen[:1]] == [("group/g", written)]
        marks = [m.revision for m in seen[1:]]
        assert all(isinstance(m, WatchProgress) for m in seen[1:])
        assert marks == sorted(marks) and marks[0] >= written
        # The plain watch yields events only.
        async with asyncio.timeout(DEADLINE):
            async for event in registry.watch("", start_revision=start):
                assert (event.key, event.revision) == ("group/g", written)
                break
    finally:
        await registry.close()
        await other.close()


async def test_progress_survives_a_restart_and_spares_a_repair_after_compaction(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    prefix = f"durable-{uuid.uuid4().hex[:8]}"
    registry = open_registry(etcd.url(prefix))
    other = open_registry(etcd.url(f"other-{uuid.uuid4().hex[:8]}"))
    try:
        await registry.put(group("g"))
        node = Node(open_registry(etcd.url(prefix)), name="n", state_dir=tmp_path / "n")
        async with node:
            await node.ready(DEADLINE)
            for i in range(30):
                await other.put(group(f"x{i}"))
            head = await other.revision()
            await _until(lambda: node.received_revision >= head, "progress past the writes")
        await node.registry.close()
        # Everything before the head is compacted away while the node is down,
        # and a schema change lands meanwhile.
        await registry.compact(head)
        written = await registry.put(measure("g", "m"))
        again = Node(open_registry(etcd.url(prefix)), name="n", state_dir=tmp_path / "n")
        async with again:
            await again.ready(DEADLINE)
            await _until(lambda: again.cache.get("measure/g/m") is not None, "the change")
            # Resumed after the progress mark: no compaction error, no repair.
            restarts = again.metrics.registry.get_sample_value(
                "schemacache_watch_restarts_total", {"reason": "compacted"})
            assert restarts == 0
            assert again.status()["repair"]["count"] == 0
            assert again.applied_revision >= written
        await again.registry.close()
    finally:
        await registry.close()
        await other.close()
