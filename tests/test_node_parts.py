"""The node's parts, each alone: progress, dependency parking, the failure log
(against a real state file), the workers and their batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from polling import until
from schemacache.model import EventType
from schemacache.node.deps import Dependencies
from schemacache.node.failures import ALERT_EXHAUSTED, FailureLog
from schemacache.node.meters import ReconcileMeters
from schemacache.node.progress import Progress
from schemacache.node.queue import PRIO_LIVE, PRIO_REPAIR, WorkQueue
from schemacache.node.state import StateStore
from schemacache.node.workers import Workers
from schemacache.observe.alerts import Alerter
from schemacache.observe.metrics import NodeMetrics

# ---------------------------------------------------------------- progress


async def test_settled_revision_waits_for_the_oldest_unsettled_key() -> None:
    p = Progress()
    assert p.settled_revision(0) == 0 and p.settled_revision(10) == 10
    p.mark_unsettled("a", 4)
    p.mark_unsettled("b", 7)
    assert p.settled_revision(10) == 3 and p.pending == 2 and not p.is_settled("a")
    assert p.settled_revision(2) == 2  # never past what was received
    p.settle("a")
    assert p.settled_revision(10) == 6 and p.is_settled("a")
    p.mark_unsettled("b", 9)  # b moved on: its old entry no longer holds anything back
    assert p.settled_revision(10) == 8
    p.settle("b")
    assert p.settled_revision(10) == 10 and p.pending == 0 and p.unsettled() == {}


async def test_progress_event_is_set_by_the_next_settle() -> None:
    p = Progress()
    p.mark_unsettled("a", 1)
    event = p.changed()
    assert not event.is_set()
    p.settle("x")  # was never unsettled: no change
    assert not event.is_set()
    p.settle("a")
    assert event.is_set()
    assert not p.changed().is_set()  # a fresh event for the next waiter


# ---------------------------------------------------------------- dependencies


def _gauge() -> Gauge:
    return Gauge("blocked", "parked keys", registry=CollectorRegistry())


def _value(gauge: Gauge) -> float:
    return gauge._value.get()  # type: ignore[attr-defined, no-any-return]


def test_park_wake_and_unpark() -> None:
    gauge = _gauge()
    deps = Dependencies(gauge)
    deps.park("measure/g/m1", ["group/g"], PRIO_LIVE)
    deps.park("measure/g/m2", ["group/g"], PRIO_REPAIR)
    assert _value(gauge) == 2 and deps.is_parked("measure/g/m1")
    assert deps.blockers("measure/g/m1") == ["group/g"] and deps.blockers("group/g") is None
    assert sorted(deps.waiters("group/g")) == [("measure/g/m1", PRIO_LIVE),
                                               ("measure/g/m2", PRIO_REPAIR)]
    assert deps.blocked() == [{"key": "measure/g/m1", "blocked_by": ["group/g"]},
                              {"key": "measure/g/m2", "blocked_by": ["group/g"]}]
    deps.unpark("measure/g/m1")
    assert deps.waiters("group/g") == [("measure/g/m2", PRIO_REPAIR)] and _value(gauge) == 1
    deps.park("measure/g/m2", ["group/h"], PRIO_LIVE)  # parked again: old blockers forgotten
    assert deps.waiters("group/g") == [] and deps.parked_keys() == {"measure/g/m2"}


def test_dependents_index_moves_with_the_applied_version() -> None:
    deps = Dependencies(_gauge())
    deps.index("measure/g/m", (), ["group/g"])
    assert deps.dependents("group/g") == {"measure/g/m"}
    deps.index("measure/g/m", ["group/g"], ["group/h"])
    assert deps.dependents("group/g") == set() and deps.dependents("group/h") == {"measure/g/m"}
    deps.index("measure/g/m", ["group/h"], ())
    assert deps.dependents("group/h") == set()


# ---------------------------------------------------------------- failure log


async def test_failure_log_writes_through_counts_and_alerts(tmp_path: Path) -> None:
    metrics = NodeMetrics()
    alerter = Alerter("n1")
    store = StateStore(tmp_path)
    await store.open()
    try:
        log = FailureLog(store=store, metrics=metrics, alerter=alerter)
        record = log.exhausted("group/g", "group", 7, attempts=5, first_failed=1.0,
                               error="boom", permanent=False)
        assert record.revision == 7 and "group/g" in log and len(log) == 1
        assert log.failed_at("group/g", 7) and not log.failed_at("group/g", 8)
        assert metrics.failed_keys._value.get() == 1
        assert [a["labels"]["alertname"] for a in alerter.active()] == [ALERT_EXHAUSTED]
        assert log.repair_failed("group/g", "still boom").attempts == 6
        assert log.to_list()[0]["last_error"] == "still boom"
        assert log.above(6) == ["group/g"] and log.above(7) == []
        await store.flush()
    finally:
        await store.close()
    # Written through: a new store on the same directory reads the record back.
    store = StateStore(tmp_path)
    loaded = await store.open()
    try:
        assert loaded.failures["group/g"].attempts == 6
        log = FailureLog(store=store, metrics=metrics, alerter=alerter)
        log.load(loaded.failures)
        assert log.clear("group/g") and not log.clear("group/g")
        assert len(log) == 0 and metrics.failed_keys._value.get() == 0
        assert alerter.active() == []
        await store.flush()
    finally:
        await store.close()
    store = StateStore(tmp_path)
    try:
        assert (await store.open()).failures == {}
    finally:
        await store.close()
    await alerter.close()


def test_meters_count_by_labels() -> None:
    metrics = NodeMetrics()
    meters = ReconcileMeters(metrics)
    meters.event("group", EventType.PUT)
    meters.event("group", EventType.PUT)
    meters.call("group", "apply", "ok", 0.01)
    meters.cached("group", 3)
    meters.cached("group", -1)
    value = metrics.registry.get_sample_value
    assert value("schemacache_events_received_total", {"kind": "group", "type": "PUT"}) == 2
    assert value("schemacache_handler_calls_total",
                 {"kind": "group", "op": "apply", "outcome": "ok"}) == 1
    assert value("schemacache_cache_entries", {"kind": "group"}) == 2


# ---------------------------------------------------------------- workers


async def test_workers_reconcile_each_key_and_finish_batches() -> None:
    queue = WorkQueue()
    seen: list[str] = []
    errors: list[str] = []
    gate = asyncio.Event()

    async def reconcile(key: str, prio: int) -> None:
        seen.append(key)
        if key == "bad":
            raise RuntimeError("bug")
        if key == "slow":
            await gate.wait()

    workers = Workers(queue, 2, reconcile=reconcile,
                      on_error=lambda key, exc: errors.append(key),
                      outcome=lambda key: key != "bad")
    batch = workers.track(["a", "bad", "slow"])
    assert workers.track([]).done.is_set()
    workers.start()
    assert workers.alive()
    for key in ("a", "bad", "slow"):
        queue.add(key)
    await until(lambda: len(seen) == 3, "three keys reconciled", within=5.0)
    assert errors == ["bad"] and not batch.done.is_set()  # "slow" still runs
    gate.set()
    await asyncio.wait_for(batch.done.wait(), 5.0)
    assert batch.incomplete  # "bad" did not converge
    await workers.stop()
    assert not workers.alive()


async def test_a_key_not_final_keeps_its_batch_open() -> None:
    queue = WorkQueue()
    final = {"a": False}
    workers = Workers(queue, 1, reconcile=_noop, on_error=lambda k, e: None,
                      outcome=lambda key: True if final[key] else None)
    batch = workers.track(["a"])
    workers.start()
    queue.add("a")
    await until(lambda: queue.processing == 0 and len(queue) == 0, "the queue drained",
                within=5.0)
    assert not batch.done.is_set()
    final["a"] = True
    queue.add("a")
    await asyncio.wait_for(batch.done.wait(), 5.0)
    assert not batch.incomplete
    stopped = workers.track(["never"])
    await workers.stop()
    assert stopped.done.is_set()  # stopping releases every waiter


async def _noop(key: str, prio: int) -> None:
    await asyncio.sleep(0)

