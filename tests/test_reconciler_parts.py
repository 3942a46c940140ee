"""The reconciler's parts, each built alone on a real state file: the received
revision in NodeState, the dependency gate, the scheduler, event intake, the
reconcile step with a real handler, the listing refresh and the start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from factories import binding, group, index_rule, measure, topn
from polling import until
from schemacache import PermanentError, Resource
from schemacache.kinds import apply_order, delete_order
from schemacache.model import Event, EventType, Metadata
from schemacache.node.deps import Dependencies
from schemacache.node.desired import Desired
from schemacache.node.failures import ALERT_EXHAUSTED, FailureLog, FailureRecord
from schemacache.node.gate import DependencyGate
from schemacache.node.handler import HandlerCaller
from schemacache.node.intake import Intake
from schemacache.node.listing import ListingRefresh
from schemacache.node.meters import ReconcileMeters
from schemacache.node.nodestate import UNKNOWN_REVISION, NodeState
from schemacache.node.progress import Progress
from schemacache.node.queue import PRIO_LIVE, PRIO_REPAIR, WorkQueue
from schemacache.node.retry import RetryLimiter, RetryPolicy
from schemacache.node.schedule import Scheduler
from schemacache.node.startup import Startup
from schemacache.node.state import LoadedState, StateStore
from schemacache.node.step import ReconcileStep
from schemacache.observe.alerts import Alerter
from schemacache.observe.metrics import NodeMetrics
from schemacache.registry.history import event_mark


@dataclass
class Parts:
    """The small parts the reconciler's parts are built from."""

    store: StateStore
    state: NodeState
    queue: WorkQueue
    progress: Progress
    deps: Dependencies
    failures: FailureLog
    limiter: RetryLimiter
    repair_limiter: RetryLimiter
    metrics: NodeMetrics
    alerter: Alerter
    meters: ReconcileMeters
    gate: DependencyGate
    scheduler: Scheduler

    def put(self, resource: Resource, revision: int, *, applied: bool = False) -> Desired:
        """``resource`` desired at ``revision`` (and applied, if ``applied``)."""
        d = Desired.of(revision, False, resource.with_revisions(revision, revision))
        self.state.set_desired(resource.key, d)
        if applied:
            self.state.set_applied(resource.key, revision, d.stored)
        return d

    def queued(self) -> list[tuple[str, int]]:
        """Empty the queue; the keys it held, most urgent first."""
        out = []
        while (item := self.queue.pop_nowait()) is not None:
            out.append(item)
            self.queue.done(item[0])
        return out


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    store = StateStore(tmp_path)
    await store.open()
    metrics = NodeMetrics()
    alerter = Alerter("n1")
    queue = WorkQueue()
    # No handler runs in these parts: a key goes to the queue without waiting
    # for its commit (the write-ahead rule has its own test below).
    state = NodeState(store, on_durable=queue.add, write_ahead=False)
    progress = Progress(received=lambda: state.received_revision)
    deps = Dependencies(metrics.blocked_keys)
    failures = FailureLog(store=store, metrics=metrics, alerter=alerter)
    limiter = RetryLimiter(RetryPolicy(max_attempts=2, base=0.01, cap=0.01))
    repair_limiter = RetryLimiter(RetryPolicy(base=30.0, cap=60.0, jitter="none"),
                                  exhaustible=False)
    gate = DependencyGate(state, deps, queue, failures)
    scheduler = Scheduler(state=state, progress=progress, deps=deps, failures=failures,
                          queue=queue, limiter=limiter, repair_limiter=repair_limiter)
    try:
        yield Parts(store, state, queue, progress, deps, failures, limiter, repair_limiter,
                    metrics, alerter, ReconcileMeters(metrics), gate, scheduler)
    finally:
        queue.shutdown()
        await store.close()
        await alerter.close()


def _node_registration(name: str) -> Resource:
    """A node registration as an old registry reported it among schema events
    (its kind has no spec rules to pass)."""
    return Resource.model_construct(kind="node", metadata=Metadata(name=name), spec={})


def _event(resource: Resource, revision: int, type_: EventType = EventType.PUT) -> Event:
    versioned = resource.with_revisions(revision, revision)
    return Event(type=type_, key=resource.key, revision=revision, resource=versioned)


# ---------------------------------------------------------------- NodeState: received revision


async def test_received_revision_and_mark_write_through(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    await store.open()
    state = NodeState(store, on_durable=lambda key, prio: None)
    put = _event(group("g1"), 5)
    try:
        assert state.receive(5, put) and state.received_revision == 5
        assert state.received_mark == event_mark(put) != ""
        assert not state.receive(4) and not state.receive(5)  # never back, never twice
        assert state.received_revision == 5 and state.received_mark == event_mark(put)
        assert state.receive(7)  # a progress mark: no change known there
        assert state.received_revision == 7 and state.received_mark == ""
        later = _event(group("g2"), 8)
        state.receive(8, later)
        await store.flush()
    finally:
        await store.close()
    store = StateStore(tmp_path)
    loaded = await store.open()
    try:
        assert (loaded.received_revision, loaded.received_mark) == (8, event_mark(later))
        state = NodeState(store, on_durable=lambda key, prio: None)
        state.adopt_received(loaded.received_revision, loaded.received_mark, "c1")
        assert state.received_mark == event_mark(later) and state.cluster_id == "c1"
        state.set_received(3)  # a rewound registry's listing: it may go back
        assert state.received_revision == 3 and state.received_mark == ""
        await store.flush()
    finally:
        await store.close()
    store = StateStore(tmp_path)
    loaded = await store.open()
    await store.close()
    assert (loaded.received_revision, loaded.received_mark) == (3, "")


async def test_admit_waits_for_the_commit_only_when_a_handler_runs(tmp_path: Path) -> None:
    store = StateStore(tmp_path, flush_interval=60.0)  # commits only when asked
    await store.open()
    released: list[tuple[str, int]] = []
    quiet = NodeState(store, on_durable=lambda key, prio: released.append((key, prio)),
                      write_ahead=False)
    # Built last: the commits report to this one.
    state = NodeState(store, on_durable=lambda key, prio: released.append((key, prio)))
    g = group("g1")
    try:
        quiet.set_desired(g.key, Desired.of(4, False, g))
        quiet.admit(g.key, PRIO_REPAIR)
        assert released == [(g.key, PRIO_REPAIR)]  # no handler: nothing to wait for
        state.set_desired(g.key, Desired.of(5, False, g))
        state.admit(g.key, PRIO_LIVE)
        assert released == [(g.key, PRIO_REPAIR)] and state.awaits_commit(g.key)
        await until(lambda: len(released) == 2, "the commit to admit the key", within=10.0)
        assert released[1] == (g.key, PRIO_LIVE) and not state.writes_backlogged
        state.admit(g.key, PRIO_REPAIR)  # durable now: at once
        assert released[2] == (g.key, PRIO_REPAIR)
    finally:
        await store.close()


# ---------------------------------------------------------------- dependency gate


async def test_gate_blocks_applies_on_prerequisites_and_deletes_on_dependents(
        parts: Parts) -> None:
    g, m = group("g"), measure("g", "m")
    dm = parts.put(m, 3)
    assert parts.gate.blockers(m.key, dm, ["group/g"]) == ["group/g"]  # not desired yet
    dg = parts.put(g, 2)
    assert parts.gate.blockers(m.key, dm, ["group/g"]) == ["group/g"]  # not applied yet
    parts.state.set_applied(g.key, 2, dg.stored)
    assert parts.gate.blockers(m.key, dm, ["group/g"]) == []
    parts.state.set_applied(m.key, 3, dm.stored)
    parts.gate.reindex(m.key, None, ["group/g"])
    tomb = Desired(9, True, dg.stored)
    assert parts.gate.blockers(g.key, tomb, []) == [m.key]  # its applied measure first
    parts.state.drop_applied(m.key)
    parts.gate.reindex(m.key, (3, dm.stored), ())
    assert parts.gate.blockers(g.key, tomb, []) == [] and parts.deps.dependents(g.key) == set()


async def test_gate_final_and_wakes_waiters(parts: Parts) -> None:
    m = measure("g", "m")
    parts.put(m, 3)
    assert parts.gate.is_final(m.key)  # not parked
    parts.deps.park(m.key, ["group/g"], PRIO_REPAIR)
    assert parts.gate.is_final(m.key)  # its group is not even desired: nothing on its way
    parts.put(group("g"), 2)
    parts.queue.add("group/g")
    assert not parts.gate.is_final(m.key)  # the group is on its way
    parts.queued()
    parts.failures.exhausted("group/g", "group", 2, attempts=1, first_failed=1.0,
                             error="boom", permanent=True)
    assert parts.gate.is_final(m.key)  # the group failed: final for now
    parts.gate.wake_waiters("group/g")
    assert parts.queued() == [(m.key, PRIO_REPAIR)]  # back at the priority it waited at


# ---------------------------------------------------------------- scheduler


async def test_a_newer_version_forgets_the_older_ones_attempts(parts: Parts) -> None:
    g = group("g")
    parts.put(g, 2)
    parts.queue.add_rate_limited(g.key, parts.limiter, 2)
    assert parts.limiter.attempts(g.key) == 1 and parts.queue.is_held(g.key)
    parts.scheduler.forget_stale(g.key, parts.put(g, 2))  # same version: kept
    assert parts.limiter.attempts(g.key) == 1
    parts.scheduler.forget_stale(g.key, parts.put(g, 4))
    assert parts.limiter.attempts(g.key) == 0 and not parts.queue.is_held(g.key)


async def test_a_rewind_or_reset_forgets_failures_and_attempts(parts: Parts) -> None:
    for name, rev in (("old", 3), ("new", 8)):
        parts.put(group(name), rev)
        parts.failures.exhausted(f"group/{name}", "group", rev, attempts=2, first_failed=1.0,
                                 error="x", permanent=False)
        parts.queue.add_rate_limited(f"group/{name}", parts.repair_limiter, rev, PRIO_REPAIR)
    parts.put(group("retried"), 9)
    parts.queue.add_rate_limited("group/retried", parts.limiter, 9)
    parts.scheduler.forget_above(5)  # rewound to 5: what is beyond it goes
    assert list(parts.failures) == ["group/old"] and parts.limiter.attempts("group/retried") == 0
    assert not parts.queue.is_held("group/retried") and parts.queue.is_held("group/old")
    parts.scheduler.forget_all()  # reset: everything goes
    assert len(parts.failures) == 0 and len(parts.repair_limiter) == 0
    assert not parts.queue.is_held("group/old") and parts.alerter.active() == []


async def test_converged_settles_unparks_and_clears_the_failure(parts: Parts) -> None:
    m = measure("g", "m")
    parts.put(m, 3)
    parts.progress.mark_unsettled(m.key, 3)
    parts.deps.park(m.key, ["group/g"], PRIO_LIVE)
    parts.failures.exhausted(m.key, "measure", 3, attempts=2, first_failed=1.0, error="x",
                             permanent=False)
    parts.repair_limiter.when(m.key, 3)
    parts.scheduler.converged(m.key)
    assert parts.progress.is_settled(m.key) and not parts.deps.is_parked(m.key)
    assert m.key not in parts.failures and parts.repair_limiter.attempts(m.key) == 0
    assert parts.alerter.active() == []  # the alert resolved


async def test_unsettled_keys_queue_in_dependency_order(parts: Parts) -> None:
    g, m, old = group("g"), measure("g", "m"), group("old")
    parts.put(m, 3)
    parts.put(g, 2)
    done = parts.put(group("done"), 1, applied=True)
    d_old = parts.put(old, 4, applied=True)
    parts.state.set_desired(old.key, Desired(6, True, d_old.stored))
    retried = parts.put(group("retried"), 5)
    parts.limiter.when("group/retried", retried.revision)  # the event path owns it
    parts.put(group("failed"), 7)
    parts.failures.exhausted("group/failed", "group", 7, attempts=2, first_failed=1.0,
                             error="x", permanent=False)
    parts.queue.add_rate_limited("group/failed", parts.repair_limiter, 7, PRIO_REPAIR)
    queued = parts.scheduler.enqueue_unsettled(list(parts.state.desired), manual=False,
                                               prio=PRIO_REPAIR)
    assert queued == [g.key, m.key, old.key]  # group before measure; deletes last
    assert parts.progress.is_settled("group/done") and done.revision == 1
    assert parts.progress.is_settled("group/failed")  # recorded as failed: settled
    assert parts.progress.unsettled() == {g.key: 2, m.key: 3, old.key: 6,
                                          "group/retried": 5}
    # A manual repair tries the failed key at once.
    queued = parts.scheduler.enqueue_unsettled(["group/failed"], manual=True, prio=PRIO_REPAIR)
    assert queued == ["group/failed"] and not parts.queue.is_held("group/failed")


# ---------------------------------------------------------------- intake


def _intake(parts: Parts) -> Intake:
    return Intake(state=parts.state, progress=parts.progress, meters=parts.meters,
                  scheduler=parts.scheduler, gate=parts.gate)


async def test_an_event_changes_desired_state_and_queues_its_key(parts: Parts) -> None:
    intake = _intake(parts)
    g = group("g")
    reached = parts.progress.reached(2)
    assert reached is not None
    intake.on_event(_event(g, 3))
    assert parts.state.desired[g.key].revision == 3 and parts.state.desired[g.key].live
    # Received 3, the key unsettled at 3: settled up to 2, and its waiter woken.
    assert parts.state.received_revision == 3 and reached.done()
    assert parts.queued() == [(g.key, PRIO_LIVE)]
    assert parts.progress.unsettled() == {g.key: 3}
    intake.on_event(_event(g, 2))  # older: desired state keeps the newer version
    assert parts.state.desired[g.key].revision == 3 and parts.queued() == []
    intake.on_event(_event(g, 5, EventType.DELETE))  # never applied: settled at once
    assert parts.state.desired[g.key].deleted and parts.queued() == []
    assert parts.progress.is_settled(g.key)
    node = _node_registration("n2")
    intake.on_event(_event(node, 6))  # counted and received, never cached
    assert "node/n2" not in parts.state.desired and parts.state.received_revision == 6
    intake.on_progress(9)
    assert parts.state.received_revision == 9 and parts.state.received_mark == ""
    value = parts.metrics.registry.get_sample_value
    assert value("schemacache_events_received_total", {"kind": "group", "type": "PUT"}) == 2
    assert value("schemacache_events_received_total", {"kind": "node", "type": "PUT"}) == 1


async def test_an_event_matching_the_applied_version_converges(parts: Parts) -> None:
    intake = _intake(parts)
    g = group("g")
    d = parts.put(g, 3, applied=True)
    parts.deps.park("measure/g/m", [g.key], PRIO_REPAIR)
    parts.state.applied[g.key] = (4, d.stored)  # as if a repair applied revision 4
    intake.on_event(_event(g, 4))
    assert parts.progress.is_settled(g.key)
    assert parts.queued() == [("measure/g/m", PRIO_REPAIR)]  # its waiter woke; g not queued


# ---------------------------------------------------------------- reconcile step


class Recorder:
    """A handler recording its calls; ``fail`` maps keys to the error they raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail: dict[str, BaseException] = {}

    async def apply(self, resource: Resource) -> None:
        self.calls.append(("apply", resource.key, resource.metadata.mod_revision))
        if resource.key in self.fail:
            raise self.fail[resource.key]

    async def delete(self, resource: Resource) -> None:
        self.calls.append(("delete", resource.key, resource.metadata.mod_revision))


class Repairs:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def request(self, reason: str) -> Any:
        self.reasons.append(reason)


def _step(parts: Parts, handler: Recorder) -> ReconcileStep:
    return ReconcileStep(
        state=parts.state, caller=HandlerCaller(handler, timeout=5.0),
        scheduler=parts.scheduler, gate=parts.gate, deps=parts.deps, failures=parts.failures,
        queue=parts.queue, progress=parts.progress, limiter=parts.limiter,
        repair_limiter=parts.repair_limiter, meters=parts.meters, metrics=parts.metrics,
        retry_gap=30.0)


async def run_step(step: ReconcileStep, key: str, prio: int) -> None:
    """One reconcile step of ``key``, to its end."""
    pending = step.step(key, prio)
    if pending is not None:
        await pending


async def test_step_applies_prerequisites_first_and_deletes(parts: Parts) -> None:
    handler = Recorder()
    step = _step(parts, handler)
    g, m = group("g"), measure("g", "m")
    parts.put(g, 2)
    parts.put(m, 3)
    parts.progress.mark_unsettled(m.key, 3)
    await run_step(step, m.key, PRIO_LIVE)
    assert handler.calls == [] and parts.deps.blockers(m.key) == [g.key]
    assert step.outcome(m.key) is None  # its group is still to be applied
    await run_step(step, g.key, PRIO_LIVE)
    assert handler.calls == [("apply", g.key, 2)]
    assert parts.queued() == [(m.key, PRIO_LIVE)]  # woken by its group
    await run_step(step, m.key, PRIO_LIVE)
    assert handler.calls[-1] == ("apply", m.key, 3) and parts.state.applied[m.key][0] == 3
    assert parts.progress.is_settled(m.key) and step.outcome(m.key) is True
    assert parts.deps.dependents(g.key) == {m.key}
    parts.state.set_desired(m.key, Desired(5, True, parts.state.desired[m.key].stored))
    await run_step(step, m.key, PRIO_LIVE)
    assert handler.calls[-1] == ("delete", m.key, 3) and m.key not in parts.state.applied
    await run_step(step, m.key, PRIO_LIVE)  # settled: no call
    assert len(handler.calls) == 3 and step.longest_running() == 0.0


async def test_step_retries_then_records_the_failure_and_asks_for_repair(
        parts: Parts) -> None:
    handler = Recorder()
    step = _step(parts, handler)
    repairs = Repairs()
    step.repairer = repairs
    g = group("g")
    parts.put(g, 2)
    parts.progress.mark_unsettled(g.key, 2)
    handler.fail[g.key] = RuntimeError("disk\nfull")
    await run_step(step, g.key, PRIO_LIVE)
    assert parts.limiter.attempts(g.key) == 1 and parts.queue.is_held(g.key)
    assert g.key not in parts.failures
    await until(lambda: parts.queue.pop_nowait() is not None, "the retry timer", within=5.0)
    parts.queue.done(g.key)
    await run_step(step, g.key, PRIO_LIVE)  # the second of max_attempts=2
    record = parts.failures.get(g.key)
    assert record is not None and (record.revision, record.attempts) == (2, 2)
    assert "disk" in record.last_error
    assert repairs.reasons == ["exhausted"] and parts.progress.is_settled(g.key)
    assert [a["labels"]["alertname"] for a in parts.alerter.active()] == [ALERT_EXHAUSTED]
    assert parts.queue.is_held(g.key)  # the repair backoff brings it back
    # A repair attempt that fails counts on the record; one that succeeds clears it.
    await run_step(step, g.key, PRIO_REPAIR)
    record = parts.failures.get(g.key)
    assert record is not None and record.attempts == 3
    del handler.fail[g.key]
    await run_step(step, g.key, PRIO_REPAIR)
    assert g.key not in parts.failures and parts.alerter.active() == []
    assert repairs.reasons == ["exhausted"]


async def test_step_permanent_error_and_unexpected_error(parts: Parts) -> None:
    handler = Recorder()
    step = _step(parts, handler)
    g, h = group("g"), group("h")
    parts.put(g, 2)
    handler.fail[g.key] = PermanentError("bad spec")
    await run_step(step, g.key, PRIO_LIVE)
    record = parts.failures.get(g.key)
    assert record is not None and record.attempts == 1 and len(handler.calls) == 1
    parts.put(h, 3)
    step.retry_after_error(h.key, RuntimeError("bug"))  # a bug in the step itself
    assert parts.limiter.attempts(h.key) == 1 and parts.queue.is_held(h.key)


# ---------------------------------------------------------------- listing refresh


def _listing(parts: Parts) -> ListingRefresh:
    return ListingRefresh(state=parts.state, progress=parts.progress,
                          scheduler=parts.scheduler)


def _listed(*pairs: tuple[Resource, int]) -> list[tuple[str, Resource]]:
    return [(r.key, r.with_revisions(rev, rev)) for r, rev in pairs]


async def test_listing_adds_newer_versions_and_deletes_missing_keys(parts: Parts) -> None:
    listing = _listing(parts)
    a, b, c = group("a"), group("b"), group("c")
    parts.put(a, 2, applied=True)
    parts.put(b, 3, applied=True)
    node = _node_registration("n2")
    queued = listing.refresh(_listed((a, 2), (c, 6), (node, 7)), 8, reset=False, manual=False)
    assert queued == [c.key, b.key]  # the new key, then the delete of the missing one
    assert parts.state.desired[b.key].deleted and parts.state.desired[b.key].revision == 8
    assert "node/n2" not in parts.state.desired
    assert parts.state.received_revision == 8 and parts.state.received_mark == ""
    parts.state.drop_applied(b.key)
    listing.refresh(_listed((a, 2), (c, 6)), 9, reset=False, manual=False)
    assert b.key not in parts.state.desired  # deleted everywhere: forgotten


async def test_listing_after_reset_and_rewind(parts: Parts) -> None:
    listing = _listing(parts)
    a, b = group("a"), group("b")
    parts.put(a, 2, applied=True)
    parts.put(b, 9, applied=True)
    parts.state.receive(9)
    parts.failures.exhausted(b.key, "group", 9, attempts=2, first_failed=1.0, error="x",
                             permanent=False)
    # Rewound to revision 5: b's version 9 is a lost future, a's version 2 stays.
    queued = listing.refresh(_listed((a, 2)), 5, reset=False, manual=False, rewound=True)
    assert parts.state.received_revision == 5 and b.key not in parts.failures
    assert parts.state.applied[b.key][0] == UNKNOWN_REVISION
    assert parts.state.applied[a.key][0] == 2 and queued == [b.key]
    assert parts.state.desired[b.key].deleted
    # Reset: every applied version is applied again.
    queued = listing.refresh(_listed((a, 1)), 1, reset=True, manual=False)
    assert parts.state.applied[a.key][0] == UNKNOWN_REVISION and a.key in queued


# ---------------------------------------------------------------- start-up


def _startup(store: StateStore) -> tuple[Startup, NodeState, Dependencies, WorkQueue, Alerter]:
    """A Startup over ``store``, built from its own small parts."""
    metrics = NodeMetrics()
    alerter = Alerter("n1")
    queue = WorkQueue()
    state = NodeState(store, on_durable=queue.add, write_ahead=False)
    deps = Dependencies(metrics.blocked_keys)
    failures = FailureLog(store=store, metrics=metrics, alerter=alerter)
    limiter = RetryLimiter(RetryPolicy())
    repair_limiter = RetryLimiter(RetryPolicy(jitter="none"), exhaustible=False)
    gate = DependencyGate(state, deps, queue, failures)
    scheduler = Scheduler(state=state, progress=Progress(), deps=deps, failures=failures,
                          queue=queue, limiter=limiter, repair_limiter=repair_limiter)
    startup = Startup(state=state, deps=deps, gate=gate, failures=failures,
                      meters=ReconcileMeters(metrics), queue=queue,
                      repair_limiter=repair_limiter, scheduler=scheduler)
    return startup, state, deps, queue, alerter


def _put(state: NodeState, res: Resource, rev: int, *, applied: bool) -> None:
    """``res`` desired at ``rev`` in ``state`` (and applied, if ``applied``)."""
    d = Desired.of(rev, False, res.with_revisions(rev, rev))
    state.set_desired(res.key, d)
    if applied:
        state.set_applied(res.key, rev, d.stored)


async def _reopened(path: Path, write: Callable[[NodeState, StateStore], None]
                    ) -> tuple[StateStore, LoadedState]:
    """A state store at ``path`` that a first process wrote with ``write``, then
    closed; opened again, with what it loaded."""
    store = StateStore(path)
    await store.open()
    write(NodeState(store, on_durable=lambda k, p: None, write_ahead=False), store)
    await store.close()
    store = StateStore(path)
    return store, await store.open()


async def test_startup_loads_plans_the_replay_and_queues_the_backlog(tmp_path: Path) -> None:
    g, m, old = group("g"), measure("g", "m"), group("old")

    def write(first: NodeState, _: StateStore) -> None:
        for res, rev in ((g, 2), (m, 3), (old, 4)):
            _put(first, res, rev, applied=True)
        m5 = Desired.of(5, False, m.with_revisions(3, 5))
        first.set_desired(m.key, m5)  # handed, maybe, then the process died
        first.set_desired(old.key, Desired(6, True, first.desired[old.key].stored))
        first.receive(6)

    store, loaded = await _reopened(tmp_path / "first", write)
    try:
        startup, state, deps, queue, alerter = _startup(store)
        startup.load(loaded)
        assert state.received_revision == 6 and deps.dependents(g.key) == {m.key}
        applies, deletes = startup.replay_plan()
        # The newest version the handler may have seen: m at 5, not its applied 3;
        # prerequisites first, each resource with its own key.
        assert [(k, r.metadata.mod_revision) for k, r in applies] == [(g.key, 2), (m.key, 5)]
        assert [(k, r.metadata.mod_revision) for k, r in deletes] == [(old.key, 4)]
        assert all(k == r.key for k, r in applies + deletes)
        startup.replayed(applies, deletes, {})
        assert state.applied[m.key][0] == 5 and old.key not in state.applied
        assert startup.backlog() == []  # everything the replay handed over is settled
        startup.replayed([applies[0]], [], {g.key: RuntimeError("x")})
        assert state.applied[g.key][0] == UNKNOWN_REVISION
        assert startup.backlog() == [g.key]
        queue.shutdown()
        await alerter.close()
    finally:
        await store.close()


async def test_the_replay_plan_hands_prerequisites_first_and_dependents_first(
        parts: Parts) -> None:
    """The start-up replay's order is :func:`apply_order`'s for applies and
    :func:`delete_order`'s for deletes, whatever order the state was written in."""
    startup = Startup(state=parts.state, deps=parts.deps, gate=parts.gate,
                      failures=parts.failures, meters=parts.meters, queue=parts.queue,
                      repair_limiter=parts.repair_limiter, scheduler=parts.scheduler)
    live = [topn("b", "t", "a", "m"), binding("a", "bind", ["r"], "m"), measure("b", "m"),
            index_rule("a", "r"), measure("a", "m"), group("b"), group("a")]
    gone = [measure("z", "m"), group("z"), binding("z", "bind", ["r"], "m")]
    for rev, res in enumerate(live + gone, start=2):
        parts.put(res, rev, applied=True)
    for res in gone:
        stored = parts.state.desired[res.key].stored
        parts.state.set_desired(res.key, Desired(100, True, stored))
    applies, deletes = startup.replay_plan()
    assert [k for k, _ in applies] == [r.key for r in apply_order(live)]
    assert [k for k, _ in deletes] == [r.key for r in delete_order(gone)]
    assert all(k == r.key for k, r in applies + deletes)


async def test_startup_replay_holds_back_parked_versions(tmp_path: Path) -> None:
    """A version the gate parked was never handed over: the replay hands such a
    key its applied version (the newest it was handed) or nothing, and hands
    the rest prerequisites first."""
    ok, m_ok = group("ok"), measure("ok", "m")  # group settled: m may have been handed
    new, m_new = group("new"), measure("new", "m")  # group handed earlier in the replay
    m_renew = measure("new", "again")  # the same, with an older version applied
    bad, m_bad = group("bad"), measure("bad", "m")  # group failed and recorded
    m_stale = measure("bad", "stale")  # the same, with an older version applied
    fixed, m_fixed = group("fixed"), measure("fixed", "m")  # failed, then a newer group
    m_lost = measure("lost", "m")  # its group is missing
    gone, m_gone = group("gone"), measure("gone", "m")  # m applied: gone's delete parked
    old, m_old = group("old"), measure("old", "m")  # both deleted, dependent first

    def write(first: NodeState, store: StateStore) -> None:
        _put(first, ok, 2, applied=True)
        _put(first, m_ok, 3, applied=False)
        _put(first, new, 4, applied=False)
        _put(first, m_new, 5, applied=False)
        _put(first, bad, 6, applied=False)
        store.put_failure(FailureRecord(bad.key, 6, 1, 1.0, 1.0, "refused"))
        _put(first, m_bad, 7, applied=False)
        _put(first, m_lost, 8, applied=False)
        _put(first, fixed, 17, applied=False)
        store.put_failure(FailureRecord(fixed.key, 16, 1, 1.0, 1.0, "refused"))
        _put(first, m_fixed, 18, applied=False)
        for res, rev in ((gone, 9), (m_gone, 10), (old, 11), (m_old, 12), (m_stale, 19),
                         (m_renew, 21)):
            _put(first, res, rev, applied=True)
        for res, rev in ((m_stale, 20), (m_renew, 22)):
            _put(first, res, rev, applied=False)
        for res, rev in ((gone, 13), (m_old, 14), (old, 15)):
            first.set_desired(res.key, Desired(rev, True, first.desired[res.key].stored))
        first.receive(22)

    store, loaded = await _reopened(tmp_path / "state", write)
    try:
        startup, state, _, queue, alerter = _startup(store)
        startup.load(loaded)
        applies, deletes = startup.replay_plan()
        plan = {k: r.mod_revision for k, r in applies}
        assert plan == {ok.key: 2, m_ok.key: 3, new.key: 4, m_new.key: 5, m_renew.key: 22,
                        bad.key: 6, m_stale.key: 19, m_gone.key: 10, fixed.key: 17,
                        m_fixed.key: 18}
        keys = list(plan)
        assert keys.index(new.key) < keys.index(m_new.key)
        assert [k for k, _ in deletes] == [m_old.key, old.key]  # not gone's
        startup.replayed(applies, deletes, {bad.key: PermanentError("still refused")})
        # The keys held back wait for the workers, which park them again.
        assert sorted(startup.backlog()) == sorted([m_bad.key, m_stale.key, m_lost.key, gone.key])
        assert m_bad.key not in state.applied and m_lost.key not in state.applied
        assert state.applied[m_new.key][0] == 5 and state.applied[m_renew.key][0] == 22
        assert state.applied[gone.key][0] == 9 and state.applied[m_stale.key][0] == 19
        queue.shutdown()
        await alerter.close()
    finally:
        await store.close()


def test_prerequisites_read_from_a_key_match_those_of_the_model() -> None:
    """The restart's dependents index reads a resource's prerequisites from its
    key where the kind allows it: the same keys the model names, for every kind."""
    from schemacache.kinds import references
    from schemacache.manifest import load_resources
    from schemacache.node.gate import prerequisite_keys, stored_prerequisite_keys
    from schemacache.stored import StoredResource

    resources = load_resources(Path(__file__).resolve().parent.parent / "examples")
    kinds = {r.kind for r in resources}
    assert {"group", "measure", "stream", "index_rule", "index_rule_binding",
            "topn_aggregation"} <= kinds, kinds
    for r in resources:
        expected = [ref.key for ref in references(r)]
        stored = StoredResource.of(r.with_revisions(3, 3))
        assert prerequisite_keys(r) == expected, r.key
        assert stored_prerequisite_keys(r.key, stored) == expected, r.key
