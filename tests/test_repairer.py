"""The repairer alone: a real registry, a real state file for the durable
records, and a tiny node side (what it received, the cluster id it knows, a
refresh that records each listing and hands back the batch of keys it would
enqueue) -- no reconciler, no node."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from factories import group, measure
from polling import until
from schemacache import open_registry
from schemacache.errors import CompactedError, RegistryRewoundError
from schemacache.node.config import NodeSettings
from schemacache.node.nodestate import NodeState
from schemacache.node.reconciler import Listed
from schemacache.node.repair import ALERT_REPAIR_FAILING, ALERT_REWOUND, Repairer
from schemacache.node.state import StateStore
from schemacache.node.workers import WorkBatch
from schemacache.observe.alerts import Alerter
from schemacache.observe.metrics import NodeMetrics
from schemacache.registry import Registry

pytestmark = pytest.mark.timeout(60)

WITHIN = 10.0


class NodeSide:
    """The node as the repairer sees it.  ``refresh`` records each listing and
    returns a batch of the keys whose listed revision differs from ``applied``
    (done at once when there are none; else when the test finishes them)."""

    def __init__(self, received: int = 0, cluster_id: str | None = None,
                 applied: dict[str, int] | None = None):
        self.received_revision = received
        self.cluster_id = cluster_id
        self.applied = dict(applied or {})
        self.listings: list[dict[str, Any]] = []
        self.batches: list[WorkBatch] = []

    def set_cluster_id(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id

    def refresh(self, resources: Iterable[Listed], revision: int, *, reset: bool,
                manual: bool, rewound: bool) -> WorkBatch:
        listed = {key: r.mod_revision for key, r in resources}
        self.listings.append({"keys": listed, "revision": revision, "reset": reset,
                              "manual": manual, "rewound": rewound})
        batch = WorkBatch(outstanding={k for k, rev in listed.items()
                                       if self.applied.get(k) != rev})
        if not batch.outstanding:
            batch.done.set()
        self.batches.append(batch)
        return batch

    def apply_all(self, batch: WorkBatch) -> None:
        """The handler applied every key of ``batch``."""
        for key in list(batch.outstanding):
            batch.finish(key, True)


class RecordingAlerter(Alerter):
    """A real alerter that also notes, per fire/resolve of an alert, what the
    state file held durably for a rewind at that instant."""

    def __init__(self, state_db: Path):
        super().__init__("n1")
        self.state_db = state_db
        self.log: list[tuple[str, str, str | None]] = []

    def durable_rewound(self) -> str | None:
        conn = sqlite3.connect(self.state_db)
        try:
            row = conn.execute("SELECT value FROM meta WHERE name = 'rewound'").fetchone()
        finally:
            conn.close()
        return None if row is None else row[0]

    def fire(self, alertname: str, **kw: Any) -> None:
        self.log.append(("fire", alertname, self.durable_rewound()))
        super().fire(alertname, **kw)

    def resolve(self, alertname: str, *, key: str = "") -> None:
        if any(name == alertname for _, name, _ in self.log):
            self.log.append(("resolve", alertname, self.durable_rewound()))
        super().resolve(alertname, key=key)

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.active()}


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    reg = open_registry("memory://")
    await reg.put(group("g1"))
    await reg.put(measure("g1", "cpu"))
    await reg.put(measure("g1", "mem"))
    yield reg
    await reg.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = StateStore(tmp_path / "state")
    await s.open()
    yield s
    await s.close()


def _repairer(registry: Registry, store: StateStore, node: NodeSide, alerter: Alerter,
              metrics: NodeMetrics, identity: Any = None, **settings: Any) -> Repairer:
    return Repairer(registry, NodeSettings(**settings), refresh=node.refresh,
                    received=lambda: node.received_revision,
                    identity=identity if identity is not None else node,
                    rewind_record=store, metrics=metrics, alerter=alerter)


def _repairs(metrics: NodeMetrics, reason: str, outcome: str = "ok") -> float:
    value = metrics.registry.get_sample_value(
        "schemacache_repairs_total", {"reason": reason, "outcome": outcome})
    return value or 0.0


async def _listing(registry: Registry) -> dict[str, int]:
    items, _ = await registry.list()
    return {r.key: r.mod_revision for r in items}


async def test_a_changed_cluster_id_is_a_reset_repair(registry: Registry,
                                                       store: StateStore) -> None:
    """A node that knows another cluster id: ``check_registry`` says ``reset``
    (and adopts nothing); a repair requested for any reason runs as a reset,
    and adopts the registry's id durably, after which the registry is known."""
    identity = NodeState(store, on_durable=lambda key, prio: None)
    identity.set_cluster_id("a-registry-since-recreated")
    node = NodeSide(received=await registry.revision())
    alerter, metrics = RecordingAlerter(store.path), NodeMetrics()
    repairer = _repairer(registry, store, node, alerter, metrics, identity=identity)
    try:
        assert await repairer.check_registry() == "reset"
        assert identity.cluster_id == "a-registry-since-recreated"
        run = repairer.request("exhausted")
        assert await run.listed == await registry.revision()
        assert run.reason == "reset"
        assert [(ls["reset"], ls["rewound"]) for ls in node.listings] == [(True, False)]
        node.apply_all(node.batches[0])
        result = await run.done
        assert (result["reason"], result["outcome"]) == ("reset", "ok")
        assert result["enqueued"] == 3
        cluster_id = await registry.cluster_id()
        assert identity.cluster_id == cluster_id
        await store.flush()
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT value FROM meta WHERE name = 'cluster_id'"
                                ).fetchone() == (cluster_id,)
        assert await repairer.check_registry() is None
        assert _repairs(metrics, "reset") == 1 and _repairs(metrics, "exhausted") == 0
        assert ALERT_REWOUND not in alerter.firing() and repairer.rewinds == 0
    finally:
        await repairer.stop()


async def test_a_first_cluster_id_is_adopted_without_a_repair(registry: Registry,
                                                               store: StateStore) -> None:
    node = NodeSide()
    repairer = _repairer(registry, store, node, RecordingAlerter(store.path), NodeMetrics())
    assert await repairer.check_registry() is None
    assert node.cluster_id == await registry.cluster_id()
    assert node.listings == [] and not repairer.running


async def test_a_registry_below_the_received_revision_is_a_rewind(registry: Registry,
                                                                   store: StateStore) -> None:
    """The node received revision 10; the registry is at 3 (a restored backup).
    A periodic repair finds it: the rewind is committed to the state file
    before ``SchemaRegistryRewound`` fires, the listing is refreshed as
    rewound, the alert stays firing until every enqueued key was handled, then
    it resolves and the record is cleared (after the resolve, so a node killed
    in between takes the rewind up again)."""
    revision = await registry.revision()
    node = NodeSide(received=revision + 7, cluster_id=await registry.cluster_id())
    alerter, metrics = RecordingAlerter(store.path), NodeMetrics()
    repairer = _repairer(registry, store, node, alerter, metrics)
    try:
        run = repairer.request("periodic")
        assert await run.listed == revision
        assert run.reason == "rewound"
        summary = (f"registry went back to revision {revision}, below revision "
                   f"{revision + 7} this node received; resyncing")
        assert alerter.log == [("fire", ALERT_REWOUND, summary)]
        assert node.listings == [{"keys": await _listing(registry), "revision": revision,
                                  "reset": False, "manual": False, "rewound": True}]
        assert ALERT_REWOUND in alerter.firing() and repairer.running
        node.apply_all(node.batches[0])
        result = await run.done
        assert (result["reason"], result["outcome"]) == ("rewound", "ok")
        assert alerter.log == [("fire", ALERT_REWOUND, summary),
                               ("resolve", ALERT_REWOUND, summary)]
        assert ALERT_REWOUND not in alerter.firing()
        await store.flush()
        assert alerter.durable_rewound() == ""
        assert repairer.rewinds == 1 and _repairs(metrics, "rewound") == 1
    finally:
        await repairer.stop()


async def test_a_refused_watch_resume_is_decided_by_the_repairer(registry: Registry,
                                                                 store: StateStore) -> None:
    """What the watch loop hands over when the registry refuses to resume it: a
    compaction needs a ``compacted`` repair and no alert; a registry restored
    and written past the node's revision needs a ``rewound`` repair, alerted on
    (durably recorded first) and resolved by that repair although the listing
    is not below what the node received."""
    revision = await registry.revision()
    node = NodeSide(received=revision, cluster_id=await registry.cluster_id())
    alerter = RecordingAlerter(store.path)
    repairer = _repairer(registry, store, node, alerter, NodeMetrics())
    try:
        assert await repairer.resume_refused(CompactedError(5, 2)) == "compacted"
        assert alerter.log == []
        refused = RegistryRewoundError(revision, revision, diverged=True)
        assert await repairer.resume_refused(refused) == "rewound"
        summary = (f"registry was restored and written past revision {revision} this "
                   "node received; resyncing")
        assert alerter.log == [("fire", ALERT_REWOUND, summary)]
        run = repairer.request("rewound")
        await run.listed
        assert node.listings[-1]["rewound"] and not node.listings[-1]["reset"]
        node.apply_all(node.batches[-1])
        assert (await run.done)["reason"] == "rewound"
        assert alerter.log[-1] == ("resolve", ALERT_REWOUND, summary)
        assert ALERT_REWOUND not in alerter.firing() and repairer.rewinds == 1
    finally:
        await repairer.stop()


async def test_a_periodic_repair_of_a_converged_node_changes_nothing(
        registry: Registry, store: StateStore) -> None:
    """Every ``repair_interval`` a periodic repair lists the registry; a node
    that applied all of it gets nothing enqueued, and no alert."""
    node = NodeSide(received=await registry.revision(), cluster_id=await registry.cluster_id(),
                    applied=await _listing(registry))
    alerter, metrics = RecordingAlerter(store.path), NodeMetrics()
    repairer = _repairer(registry, store, node, alerter, metrics, repair_interval=0.05)
    try:
        repairer.start_periodic()
        await until(lambda: repairer.count >= 2, "two periodic repairs", WITHIN)
        info = repairer.info()
        assert (info["last_reason"], info["last_outcome"]) == ("periodic", "ok")
        assert all(ls["keys"] == node.applied and not (ls["reset"] or ls["rewound"]
                                                       or ls["manual"])
                   for ls in node.listings)
        assert all(not b.outstanding for b in node.batches)
        assert _repairs(metrics, "periodic") >= 2
        assert alerter.firing() == set() and alerter.log == []
    finally:
        await repairer.stop()


async def test_requests_while_a_repair_runs_coalesce_into_one(registry: Registry,
                                                               store: StateStore) -> None:
    """While one repair waits for its keys, three requests share one pending
    run, which takes the most important reason (``manual``) and runs once
    after the first; nothing runs after it."""
    node = NodeSide(received=await registry.revision(), cluster_id=await registry.cluster_id())
    alerter, metrics = RecordingAlerter(store.path), NodeMetrics()
    repairer = _repairer(registry, store, node, alerter, metrics)
    try:
        first = repairer.request("exhausted")
        await first.listed
        later = [repairer.request(r) for r in ("periodic", "manual", "exhausted")]
        assert later[0] is later[1] is later[2] and later[0] is not first
        assert later[0].reason == "manual"
        assert repairer.info()["pending"] and len(node.listings) == 1
        node.apply_all(node.batches[0])
        assert (await first.done)["reason"] == "exhausted"
        await later[0].listed
        assert [ls["manual"] for ls in node.listings] == [False, True]
        node.apply_all(node.batches[1])
        assert (await later[0].done)["reason"] == "manual"
        await until(lambda: not repairer.running, "the repairer idle", WITHIN)
        assert repairer.count == 2 and len(node.listings) == 2
        assert _repairs(metrics, "exhausted") == 1 and _repairs(metrics, "manual") == 1
        assert ALERT_REPAIR_FAILING not in alerter.firing()
    finally:
        await repairer.stop()


async def test_a_reset_repair_resolves_a_rewind_found_before_it(registry: Registry,
                                                                store: StateStore) -> None:
    """A rewind was alerted on, then the registry turns out recreated (another
    cluster id): the reset repair replaces every version, so once it converged
    the rewind alert resolves and its durable record is cleared too."""
    revision = await registry.revision()
    node = NodeSide(received=revision + 4, cluster_id="a-registry-since-recreated")
    alerter = RecordingAlerter(store.path)
    repairer = _repairer(registry, store, node, alerter, NodeMetrics())
    try:
        assert await repairer.resume_refused(RegistryRewoundError(revision, revision + 4)
                                             ) == "rewound"
        run = repairer.request("rewound")
        await run.listed
        assert run.reason == "reset" and node.listings[-1]["reset"]
        assert ALERT_REWOUND in alerter.firing()
        node.apply_all(node.batches[-1])
        assert (await run.done)["reason"] == "reset"
        assert ALERT_REWOUND not in alerter.firing()
        await store.flush()
        assert alerter.durable_rewound() == "" and repairer.rewinds == 0
    finally:
        await repairer.stop()
