"""The node's parts, each alone: progress, dependency parking, the failure log
(against a real state file), the workers and their batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

from factories import group
from polling import until
from schemacache.errors import PermanentError
from schemacache.model import EventType, Resource
from schemacache.node.deps import Dependencies
from schemacache.node.failures import ALERT_EXHAUSTED, FailureLog
from schemacache.node.handler import HandlerCaller
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


_MARKS = st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 40) | st.none()),
                  max_size=60)


@settings(max_examples=300, deadline=None)
@given(_MARKS)
def test_the_settled_revision_is_below_the_oldest_unsettled_version_in_any_order(
        steps: list[tuple[str, int | None]]) -> None:
    """Marks in and out of revision order (a watch, a repair) and settles, mixed:
    after each step the settled revision is the oldest unsettled one minus 1."""
    p = Progress()
    model: dict[str, int] = {}
    for key, revision in steps:
        if revision is None:
            p.settle(key)
            model.pop(key, None)
        else:
            p.mark_unsettled(key, revision)
            model[key] = revision
        assert p.settled_revision(50) == min([50, *(r - 1 for r in model.values())])
        assert p.unsettled() == model


async def test_a_progress_waiter_wakes_once_its_revision_is_settled() -> None:
    received = 10
    p = Progress(received=lambda: received)
    assert p.reached(10) is None  # nothing unsettled: settled at once
    p.mark_unsettled("a", 4)
    p.mark_unsettled("b", 7)
    at_5, at_10, at_12 = p.reached(5), p.reached(10), p.reached(12)
    assert at_5 is not None and at_10 is not None and at_12 is not None
    p.settle("x")  # was never unsettled: no change
    p.notify()
    assert not at_5.done()
    p.settle("a")  # settled revision 6: the waiter for 5 wakes, not the one for 10
    assert at_5.done() and not at_10.done()
    p.settle("b")
    assert at_10.done() and not at_12.done()  # 12 is not received yet
    received = 12
    p.notify()
    assert at_12.done()


async def test_a_progress_waiter_that_gave_up_is_forgotten() -> None:
    p = Progress(received=lambda: 3)
    p.mark_unsettled("a", 2)
    gave_up, waiting = p.reached(3), p.reached(3)
    assert gave_up is not None and waiting is not None
    gave_up.cancel()
    p.discard(gave_up)
    p.settle("a")
    assert waiting.done() and gave_up.cancelled()


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



async def test_a_queue_waiter_wakes_once_its_condition_holds_not_at_every_take() -> None:
    q = WorkQueue()
    for key in "abcde":
        q.add(key, PRIO_LIVE)
    checks: list[tuple[int, bool]] = []

    def below_two() -> bool:
        checks.append((q.urgent, asyncio.current_task() is waiter))
        return q.urgent < 2

    waiter = asyncio.ensure_future(q.wait_for(below_two))
    await asyncio.sleep(0)
    woken = []
    for _ in range(4):
        assert q.pop_nowait() is not None
        await asyncio.sleep(0)
        woken.append(waiter.done())
    # Checked by the taker at each take: the waiting task runs only once, when
    # the condition holds (not once per key taken, to check for itself).
    assert woken == [False, False, False, True]
    assert checks == [(5, True), (4, False), (3, False), (2, False), (1, False)]


async def test_a_queue_waiter_with_an_urgent_floor_is_not_checked_above_it() -> None:
    """A condition that cannot hold while ``urgent`` is at or above its floor is
    not called at those takes; one without a floor makes every take check."""
    q = WorkQueue()
    for key in "abcdef":
        q.add(key, PRIO_LIVE)
    checks: list[int] = []

    def below_two() -> bool:
        checks.append(q.urgent)
        return q.urgent < 2

    waiter = asyncio.ensure_future(q.wait_for(below_two, urgent_below=2))
    await asyncio.sleep(0)
    while not waiter.done():
        assert q.pop_nowait() is not None
        await asyncio.sleep(0)
    assert checks == [6, 1] and q.urgent == 1
    del checks[:]
    q.add("g", PRIO_LIVE)
    q.add("h", PRIO_LIVE)  # urgent: 3
    other = asyncio.ensure_future(q.wait_for(lambda: checks.append(-1) or False))
    floored = asyncio.ensure_future(
        q.wait_for(lambda: checks.append(-2) or False, urgent_below=1))
    await asyncio.sleep(0)
    assert q.pop_nowait() is not None  # urgent 2: the floorless one makes it check all
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    assert q.pop_nowait() is not None  # urgent 1: at the floor, not checked
    assert q.pop_nowait() is not None  # urgent 0: checked
    assert checks == [-1, -2, -1, -2, -2]
    floored.cancel()
    await asyncio.gather(floored, return_exceptions=True)


async def test_a_queue_waiter_is_released_by_shutdown() -> None:
    q = WorkQueue()
    q.add("a", PRIO_LIVE)
    waiter = asyncio.ensure_future(q.wait_for(lambda: q.urgent < 1))
    await asyncio.sleep(0)
    assert not waiter.done()
    q.shutdown()
    await asyncio.wait_for(waiter, 1.0)


# ---------------------------------------------------------------- handler calls


async def test_handler_call_that_never_waits_finishes_in_start() -> None:
    calls: list[str] = []

    class Quick:
        async def apply(self, r: Resource) -> None:
            calls.append(r.key)

        async def delete(self, r: Resource) -> None:
            raise PermanentError("no")

    caller = HandlerCaller(Quick(), timeout=5.0)
    assert caller.start("apply", group("g")) is None  # done: nothing to await
    assert calls == ["group/g"]
    with pytest.raises(PermanentError):
        caller.start("delete", group("g"))  # raised at once, as the handler did


async def test_handler_call_that_waits_is_finished_under_the_timeout() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    class Waiting:
        async def apply(self, r: Resource) -> None:
            await release.wait()
            calls.append(r.key)

        async def delete(self, r: Resource) -> None:
            await asyncio.sleep(3600)

    class Plain:
        def apply(self, r: Resource) -> None:
            calls.append(f"thread {r.key}")

        def delete(self, r: Resource) -> None:
            pass

    caller = HandlerCaller(Waiting(), timeout=0.2)
    pending = caller.start("apply", group("g"))
    assert pending is not None and calls == []
    release.set()
    await pending
    assert calls == ["group/g"]
    pending = caller.start("delete", group("g"))
    assert pending is not None
    with pytest.raises(TimeoutError):
        await pending
    pending = HandlerCaller(Plain(), timeout=5.0).start("apply", group("g"))
    assert pending is not None  # a plain handler runs in a thread
    await pending
    assert calls[-1] == "thread group/g"
