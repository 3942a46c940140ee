"""Hypothesis stateful test: one node against the memory registry, DESIGN.md invariants 1-7.

The machine drives a real :class:`schemacache.Node` (memory registry, durable
state in a temporary directory, workers, retry limiter, repairs) with random
writes and deletes of a small key space (two groups with two measures each, so
that dependencies matter), a handler whose failures are switched per key
(transient: a retryable error; permanent: :class:`PermanentError`), writes
that land while the same key's apply is still running, manual repairs, clean
restarts with the same state directory, and restarts after the registry
compacted away the node's resume point.  Two plain tests below pin down the
node bugs this machine and the crash test found.

Each rule ends by *settling* the node (polled with a deadline): it received
every write, no key waits at live or retry priority, no event-path retries are
pending, every unsettled key is parked and no repair runs.  Keys recorded as
failed keep being retried by repair in the background, with a short backoff.

What is checked, and where:

1. convergence — rule ``converge`` and the end of every case: faults cleared
   and a manual repair run, the node's applied state, its cache digest and the
   handler's own state equal the registry (key → ``mod_revision``); no failure
   and no blocked key is left;
2. monotonic per key — on every handler call (seen by a wrapper around the
   node's handler invoker, which reads the exact desired version the worker
   acts on): per key, the target version (``mod_revision`` of an apply, the
   tombstone revision of a delete) never goes below the target of an earlier
   successful call (strictly above an earlier delete: no resurrection), nor
   below an earlier attempt of the same node lifetime, nor below the newest
   version the registry held for the key at the last settle point (the node
   had received it: a stale listing must not bring back an older one); a
   delete hands the handler exactly the version it last applied;
3. bounded retries — handler calls from the event path (no failure record for
   that key and target) per (key, target, node lifetime) never exceed
   ``max_attempts``; repair's retries of a failed key are not counted;
4. no head-of-line blocking — after settling, every present key that is not
   faulty and whose group is not faulty is applied at the registry's version,
   and every deleted key is gone unless it or a resource still applied under
   it is faulty, whatever other keys are failing;
5. durability — on restart the handler is replayed the applied state the node
   had at stop, except that a key whose last handler call had not succeeded
   (a failed key) is handed the newest version it may have seen instead
   (write-ahead: never an older one), and the failure records and applied
   versions are the ones held before the stop (or, for such keys, newer);
6. nothing dropped — after settling, the node's desired state holds every
   registry key at its ``mod_revision``, every other key as a tombstone, and
   its received revision is the registry's;
7. compaction — rule ``compact_while_stopped``: keys deleted while the node was
   stopped and the history compacted reach the handler as deletes after the
   restart, through a ``compacted`` repair.

Cases run derandomized (stable in CI); set ``SCHEMACACHE_STATEFUL_EXAMPLES`` to
run that many random cases instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from factories import group, measure
from node_procs.harness import wait_until
from schemacache import (
    EventType,
    NotFoundError,
    PermanentError,
    Resource,
    TemporaryError,
    ValidationError,
    digest,
    open_registry,
)
from schemacache.node import Node, RetryPolicy
from schemacache.registry.memory import MemoryRegistry

T = TypeVar("T")

GROUPS = ("g0", "g1")
MEASURES = ("m0", "m1")
GROUP_KEYS = tuple(f"group/{g}" for g in GROUPS)
MEASURE_KEYS = tuple(f"measure/{g}/{m}" for g in GROUPS for m in MEASURES)
KEYS = GROUP_KEYS + MEASURE_KEYS
FAULT_MODES = ("none", "transient", "permanent")

MAX_ATTEMPTS = 3
RETRY = RetryPolicy(max_attempts=MAX_ATTEMPTS, base=0.001, cap=0.01)
REPAIR_BACKOFF_BASE = 0.02
REPAIR_BACKOFF_CAP = 0.1
WORKERS = 4
SETTLE_TIMEOUT = 10.0
"""Seconds a node may take to settle after one step."""
STEP_TIMEOUT = 30.0
"""Seconds one async step may take at most."""
SETTLE_POLL = 0.002
HOLD_TIMEOUT = 0.5
"""Seconds ``write_during_apply`` waits for the apply to start."""

EXAMPLES_ENV = "SCHEMACACHE_STATEFUL_EXAMPLES"
CI_EXAMPLES = 100
STEPS = 40


def _group_of(key: str) -> str | None:
    parts = key.split("/")
    return f"group/{parts[1]}" if parts[0] != "group" else None


class _FaultHandler:
    """An async handler that fails on command and keeps what it applied.

    ``state`` is the handler's in-memory state (key → version), lost on every
    restart and rebuilt by the node's replay, as a real handler's would be.
    """

    def __init__(self) -> None:
        self.faults: dict[str, str] = {}
        self.state: dict[str, int] = {}
        self.replaying = False
        self.replay_attempts: dict[str, int] = {}
        self.replay_deletes: set[str] = set()
        self.deleted: list[str] = []
        self.violations: list[str] = []
        self.hold: str | None = None
        """Applies of this key wait for :attr:`release` (a call in flight)."""
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def _maybe_fail(self, key: str) -> None:
        mode = self.faults.get(key, "none")
        if mode == "transient":
            raise TemporaryError(f"injected transient fault on {key}")
        if mode == "permanent":
            raise PermanentError(f"injected permanent fault on {key}")

    async def apply(self, resource: Resource) -> None:
        if self.replaying:
            self.replay_attempts[resource.key] = resource.mod_revision
        if resource.key == self.hold:
            self.held.set()
            await self.release.wait()
        self._maybe_fail(resource.key)
        self.state[resource.key] = resource.mod_revision

    async def delete(self, resource: Resource) -> None:
        if self.replaying:
            self.replay_deletes.add(resource.key)
        self._maybe_fail(resource.key)
        held = self.state.get(resource.key)
        # Holding nothing is fine: the replay of that version may have failed.
        if held is not None and held != resource.mod_revision:
            self.violations.append(f"delete of {resource.key} handed version "
                                   f"{resource.mod_revision}, the handler holds {held}")
        self.state.pop(resource.key, None)
        self.deleted.append(resource.key)


@dataclass
class _Floor:
    value: int
    strict: bool  # set by a delete: only a newer life may follow

    def admits(self, target: int) -> bool:
        return target > self.value if self.strict else target >= self.value


class NodeMachine(RuleBasedStateMachine):
    """Random writes, faults, repairs and restarts against one node."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.state_dir = tempfile.mkdtemp(prefix="sc-stateful-")
        self.registry: MemoryRegistry = self._memory_registry()
        self.handler = _FaultHandler()
        self.node: Node | None = None
        self.lifetime = 0
        self.violations = self.handler.violations
        self.event_calls: Counter[tuple[str, str, int, int]] = Counter()
        self.applied_floor: dict[str, _Floor] = {}
        self.attempt_floor: dict[str, _Floor] = {}
        self.received_floor: dict[str, int] = {}
        self.present: dict[str, int] = {}
        """Registry keys → mod_revision, as the machine's own watch saw them."""
        self.last_write: dict[str, int] = {}
        """Key → revision of its newest write (put or delete)."""
        self.seen_revision = 0
        self.history = self.loop.create_task(self._follow_registry())
        self.before_stop: tuple[dict[str, int], dict[str, tuple[int, float]]] = ({}, {})

    @staticmethod
    def _memory_registry() -> MemoryRegistry:
        reg = open_registry("memory://")
        assert isinstance(reg, MemoryRegistry)
        return reg

    # ------------------------------------------------------------------ plumbing

    async def _follow_registry(self) -> None:
        async for change in self.registry.watch("", start_revision=1):
            self.last_write[change.key] = change.revision
            if change.type == EventType.PUT:
                self.present[change.key] = change.revision
            else:
                self.present.pop(change.key, None)
            self.seen_revision = change.revision

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP_TIMEOUT))

    @property
    def live(self) -> Node:
        assert self.node is not None
        return self.node

    def _new_node(self) -> Node:
        return Node(self.registry, name="stateful", state_dir=self.state_dir,
                    handler=self.handler, retry=RETRY, workers=WORKERS,
                    repair_interval=0, repair_backoff_base=REPAIR_BACKOFF_BASE,
                    repair_backoff_cap=REPAIR_BACKOFF_CAP)

    async def _start(self) -> None:
        node = self._new_node()
        self.lifetime += 1
        self.handler.state.clear()
        self.handler.replay_attempts.clear()
        self.handler.replay_deletes.clear()
        self.attempt_floor.clear()
        self.handler.replaying = True
        try:
            await node.start()
        finally:
            self.handler.replaying = False
        # Workers only run once start() returned, so every call goes through here.
        self._observe_calls(node)
        self.node = node

    def _observe_calls(self, node: Node) -> None:
        rec = node._reconciler
        inner = rec.caller.call
        lifetime = self.lifetime

        async def call(op: str, resource: Resource) -> None:
            # Runs synchronously inside the worker's step: desired and failure
            # records are exactly what the worker decided on.
            key = resource.key
            d = rec.desired[key]
            target = d.revision
            failure = rec.failures.get(key)
            event_path = failure is None or failure.revision != target
            self._check_target(key, op, target, resource)
            if event_path:
                self.event_calls[(key, op, target, lifetime)] += 1
            # A failed call may be retried at the same target; a done delete ends a life.
            self.attempt_floor[key] = _Floor(target, False)
            await inner(op, resource)
            self.attempt_floor[key] = self.applied_floor[key] = _Floor(target, op == "delete")

        rec.caller.call = call  # type: ignore[method-assign]

    def _check_target(self, key: str, op: str, target: int, resource: Resource) -> None:
        if op == "apply" and resource.mod_revision != target:
            self.violations.append(f"apply of {key} at {target} carries version "
                                   f"{resource.mod_revision}")
        for name, floor in (("applied", self.applied_floor.get(key)),
                            ("attempted", self.attempt_floor.get(key))):
            if floor is not None and not floor.admits(target):
                self.violations.append(
                    f"{op} {key} at {target} after {name} "
                    f"{'delete' if floor.strict else 'version'} {floor.value}")
        received = self.received_floor.get(key)
        if received is not None and target < received:
            self.violations.append(f"{op} {key} at {target}: the node had received "
                                   f"revision {received} of it")

    async def _settle(self) -> None:
        node = self.live
        rec = node._reconciler

        async def quiet() -> bool:
            target = await self.registry.revision()
            status = node.status()
            return (rec.received_revision >= target and self.seen_revision >= target
                    and rec.queue.urgent == 0
                    and rec.queue.processing == 0 and not rec._attempts
                    and set(rec._unsettled) <= set(rec._parked)
                    and not status["repair"]["running"] and not status["repair"]["pending"])

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        while not await quiet():
            if loop.time() > deadline:
                raise AssertionError(
                    f"node did not settle in {SETTLE_TIMEOUT}s: {node.status()}; registry at "
                    f"{await self.registry.revision()}, machine saw {self.seen_revision}, "
                    f"urgent {rec.queue.urgent}, processing {rec.queue.processing}, "
                    f"attempts {rec._attempts}, unsettled {rec._unsettled}, "
                    f"parked {rec._parked}")
            await asyncio.sleep(SETTLE_POLL)
        # The node received every write so far: nothing older may be applied later.
        self.received_floor.update(self.last_write)

    def step(self, coro: Awaitable[Any]) -> None:
        async def body() -> None:
            await coro
            await self._settle()

        self.run(body())

    async def _registry_map(self) -> dict[str, int]:
        items, _ = await self.registry.list()
        listed = {r.key: r.mod_revision for r in items}
        assert listed == self.present, "the machine's view of the registry is off"
        return listed

    # ------------------------------------------------------------------ rules

    @initialize()
    def start(self) -> None:
        self.step(self._start())

    @rule(name=st.sampled_from(GROUPS), shards=st.integers(1, 3))
    def put_group(self, name: str, shards: int) -> None:
        r = group(name)
        r.spec["resource_opts"]["shard_num"] = shards
        self.step(self.registry.put(Resource.parse(r.to_dict())))

    @rule(key=st.sampled_from(MEASURE_KEYS), fields=st.integers(1, 3))
    def put_measure(self, key: str, fields: int) -> None:
        _, g, m = key.split("/")
        r = measure(g, m, fields=tuple(f"f{i}" for i in range(fields)))

        async def put() -> None:
            try:
                await self.registry.put(r)
            except ValidationError:
                pass  # its group does not exist right now

        self.step(put())

    @rule(key=st.sampled_from(MEASURE_KEYS), delete=st.booleans())
    def write_during_apply(self, key: str, delete: bool) -> None:
        """Put ``key`` and, while its apply is still running, delete or update it."""
        _, g, m = key.split("/")

        async def race() -> None:
            handler = self.handler
            handler.hold, handler.held, handler.release = key, asyncio.Event(), asyncio.Event()
            try:
                try:
                    await self.registry.put(measure(g, m, fields=("a",)))
                except ValidationError:
                    return  # its group does not exist right now
                # Parked behind a failing group, or failing itself: it may never start.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(handler.held.wait(), HOLD_TIMEOUT)
                if delete:
                    await self.registry.delete(key)
                else:
                    await self.registry.put(measure(g, m, fields=("b",)))
                head = await self.registry.revision()
                while self.live.received_revision < head:  # noqa: ASYNC110 - the watch
                    await asyncio.sleep(SETTLE_POLL)  # must deliver it during the apply
            finally:
                handler.hold = None
                handler.release.set()

        self.step(race())

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        async def remove() -> None:
            try:
                await self.registry.delete(key, cascade=True)
            except NotFoundError:
                pass

        self.step(remove())

    @rule(key=st.sampled_from(KEYS), mode=st.sampled_from(FAULT_MODES))
    def set_fault(self, key: str, mode: str) -> None:
        if mode == "none":
            self.handler.faults.pop(key, None)
        else:
            self.handler.faults[key] = mode
        # Faults only matter when a key is next processed; poke failed keys now.
        self.step(self.live.repair("manual"))

    @rule()
    def manual_repair(self) -> None:
        async def repair() -> None:
            result = await self.live.repair("manual")
            assert result["outcome"] in ("ok", "partial"), result

        self.step(repair())

    @rule()
    def restart(self) -> None:
        async def restart() -> None:
            await self._stop()
            await self._start_checked()

        self.step(restart())

    async def _stop(self) -> None:
        rec = self.live._reconciler
        self.before_stop = (
            {k: res.mod_revision for k, (_, res) in rec.applied.items()},
            {k: (f.revision, f.first_failed) for k, f in rec.failures.items()},
        )
        await self.live.stop()
        self.node = None

    async def _start_checked(self) -> None:
        """Start again and check durability (5) against the state at :meth:`_stop`."""
        applied, failures = self.before_stop
        await self._start()
        rec = self.live._reconciler
        # The handler's state is rebuilt from what was applied, or a newer version
        # (or a delete) where a call had not succeeded: never an older one ...
        replayed, redeleted = self.handler.replay_attempts, self.handler.replay_deletes
        for key, version in applied.items():
            assert key in redeleted or replayed.get(key, -1) >= version, (
                f"5: replayed {key} {replayed.get(key)}, applied at stop {version}")
        # ... failure records survive ...
        loaded_failures = {k: (f.revision, f.first_failed) for k, f in rec.failures.items()}
        assert loaded_failures == failures, f"5: failures {loaded_failures} != {failures}"
        # ... and so does the applied state (newer where the replay handed newer).
        loaded = {k: res.mod_revision for k, (_, res) in rec.applied.items()}
        for key, version in applied.items():
            assert key in redeleted or loaded.get(key, -1) >= version, (
                f"5: applied after restart {loaded} vs {applied}")
        assert set(loaded) <= set(applied) | set(replayed), (
            f"5: applied after restart {loaded} vs {applied}")
        if failures:
            event("restart with failure records")

    @precondition(lambda self: bool(self.present))
    @rule(data=st.data())
    def compact_while_stopped(self, data: st.DataObject) -> None:
        self.run(self._compact_while_stopped(data))

    async def _compact_while_stopped(self, data: st.DataObject) -> None:
        await self._stop()
        before = self.before_stop[0]
        present = sorted(self.present)
        doomed = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=3,
                                    unique=True), label="deleted while stopped")
        for key in doomed:
            with contextlib.suppress(NotFoundError):  # gone with a cascade before
                await self.registry.delete(key, cascade=True)
        if data.draw(st.booleans(), label="recreate a measure"):
            key = data.draw(st.sampled_from(MEASURE_KEYS), label="recreated")
            _, g, m = key.split("/")
            with contextlib.suppress(ValidationError):  # its group is gone
                await self.registry.put(measure(g, m))
        # One more write, so the compaction always passes the node's resume point
        # (etcd semantics: compacting at R keeps R itself).
        await self.registry.put(group(data.draw(st.sampled_from(GROUPS), label="touched")))
        head = await self.registry.revision()
        while self.seen_revision < head:  # noqa: ASYNC110 - the machine's own watch
            await asyncio.sleep(SETTLE_POLL)  # must not be compacted under it
        await self.registry.compact(head)
        deletes_before = len(self.handler.deleted)
        await self._start_checked()
        await self._settle()
        node = self.live
        compacted = sum(node.metrics.registry.get_sample_value(
            "schemacache_repairs_total", {"reason": "compacted", "outcome": o}) or 0.0
            for o in ("ok", "partial"))
        assert compacted >= 1, "no compacted repair after the resume point was compacted"
        event("compacted while stopped")
        # 7: every key applied before the stop and gone now was deleted through the
        # handler, unless a fault (its own or a dependent's still applied) holds it.
        now = await self._registry_map()
        rec = node._reconciler
        delivered = set(self.handler.deleted[deletes_before:])
        for key in before:
            if key in now:
                continue
            held = key in self.handler.faults or any(
                _group_of(k) == key and k in rec.applied for k in rec.applied)
            if not held:
                assert key in delivered, f"missed delete of {key} never reached the handler"
                assert key not in rec.applied

    @rule()
    def converge(self) -> None:
        self.run(self._converge())

    async def _converge(self) -> None:
        self.handler.faults.clear()
        await self._settle()
        result = await self.live.repair("manual")
        assert result["outcome"] == "ok", result
        await self._settle()
        node = self.live
        rec = node._reconciler
        expected = await self._registry_map()
        applied = {k: rev for k, (rev, _) in rec.applied.items()}
        assert applied == expected, "1: applied state differs from the registry"
        assert {k: r.mod_revision for k, r in ((r.key, r) for r in node.cache.list())} == expected
        assert node.status()["cache"]["digest"] == digest(expected.items())
        assert self.handler.state == expected, "1: the handler's state differs"
        assert node.failures() == [] and node.blocked() == []
        assert node.status()["state"] == "ready"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def coverage(self) -> None:
        # Shown by --hypothesis-show-statistics: how often the interesting states occur.
        if self.node is None:
            return
        if self.node.failures():
            event("a key is recorded as failed")
        if self.node.blocked():
            event("a key is parked behind a failing prerequisite")
        if any(n == MAX_ATTEMPTS for n in self.event_calls.values()):
            event("a version used all its event-path attempts")

    @invariant()
    def monotonic(self) -> None:
        assert not self.violations, "2: " + "; ".join(self.violations[:5])

    @invariant()
    def bounded_retries(self) -> None:
        over = {k: n for k, n in self.event_calls.items() if n > MAX_ATTEMPTS}
        assert not over, f"3: more than {MAX_ATTEMPTS} event-path calls: {over}"

    @invariant()
    def nothing_dropped(self) -> None:
        if self.node is None:
            return
        rec = self.live._reconciler
        current = self.present
        assert rec.received_revision == self.seen_revision
        for key, revision in current.items():
            d = rec.desired.get(key)
            assert d is not None and not d.deleted and d.revision == revision, (
                f"6: desired {key} = {d and (d.revision, d.deleted)}, registry {revision}")
        for key, d in rec.desired.items():
            if key not in current:
                assert d.deleted, f"6: {key} is gone from the registry, desired {d.revision}"

    @invariant()
    def no_head_of_line_blocking(self) -> None:
        if self.node is None:
            return
        rec = self.live._reconciler
        faults = self.handler.faults
        current = self.present
        for key, revision in current.items():
            prerequisite = _group_of(key)
            if key in faults or (prerequisite is not None and prerequisite in faults):
                continue
            entry = rec.applied.get(key)
            assert entry is not None and entry[0] == revision, (
                f"4: {key} (no failing prerequisite) is not applied at {revision}: "
                f"{entry and entry[0]}; faults {faults}, blocked {self.live.blocked()}")
        for key in rec.applied:
            if key in current or key in faults:
                continue
            held_by = [k for k in rec.applied if _group_of(k) == key]
            assert held_by and any(k in faults for k in held_by), (
                f"4: {key} was deleted, is not faulty, yet still applied")

    def teardown(self) -> None:
        try:
            if self.node is not None:
                self.run(self._converge())
                self.monotonic()
                self.bounded_retries()
        finally:
            try:
                if self.node is not None:
                    self.run(self.node.stop())
                self.history.cancel()
                self.run(self.registry.close())
                self.loop.run_until_complete(asyncio.gather(self.history,
                                                            return_exceptions=True))
            finally:
                self.loop.close()
                shutil.rmtree(self.state_dir, ignore_errors=True)


def _settings() -> settings:
    examples = os.environ.get(EXAMPLES_ENV)
    common: dict[str, Any] = {
        "stateful_step_count": STEPS,
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    if examples:
        return settings(max_examples=int(examples), **common)
    return settings(max_examples=CI_EXAMPLES, derandomize=True, database=None, **common)


NodeMachine.TestCase.settings = _settings()
TestNodeStateful = NodeMachine.TestCase
TestNodeStateful.pytestmark = pytest.mark.timeout(300)  # type: ignore[attr-defined]


class _GatedHandler:
    """Holds every apply of ``gated`` until :attr:`release` is set."""

    def __init__(self, gated: str):
        self.gated = gated
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[tuple[str, str, int]] = []

    async def apply(self, resource: Resource) -> None:
        if resource.key == self.gated:
            self.entered.set()
            await self.release.wait()
        self.calls.append(("apply", resource.key, resource.mod_revision))

    async def delete(self, resource: Resource) -> None:
        self.calls.append(("delete", resource.key, resource.mod_revision))


async def test_delete_during_first_apply_is_not_lost(tmp_path: Path) -> None:
    """A key created and deleted while its first apply is still running (found by
    the crash test: 4 workers catching up after a restart) must end up
    deleted: the delete arrives while nothing is applied yet, so the tombstone
    looks settled, but the running apply is about to apply the key."""
    reg = open_registry("memory://")
    key = "measure/g0/m0"
    handler = _GatedHandler(key)
    async with Node(reg, name="gated", state_dir=tmp_path, handler=handler,
                    repair_interval=0) as node:
        await node.ready(10)
        await reg.put(group("g0"))
        await reg.put(measure("g0", "m0"))
        await asyncio.wait_for(handler.entered.wait(), 10)
        revision = await reg.delete(key)
        # Let the watch deliver the delete while the apply is still held.
        async def received() -> bool:
            return node.received_revision >= revision

        await wait_until(received, 10, "the delete event")
        handler.release.set()

        async def applied() -> bool:
            return any(c[:2] == ("apply", key) for c in handler.calls)

        await wait_until(applied, 10, f"the held apply of {key} to finish")

        async def gone() -> bool:
            return node.cache.get(key) is None and node.applied_revision >= revision

        await wait_until(gone, 5, f"{key} to be deleted (status {node.status()})")
        assert handler.calls[-1][:2] == ("delete", key), handler.calls
        assert node.status()["cache"]["size"] == 1
    await reg.close()


class _FailingGroupHandler:
    """Fails every call for ``group/g0`` (a retryable error); everything else works."""

    async def apply(self, resource: Resource) -> None:
        if resource.key == "group/g0":
            raise TemporaryError("injected fault on group/g0")

    async def delete(self, resource: Resource) -> None:
        return None


async def test_repair_finishes_while_a_prerequisite_keeps_failing(tmp_path: Path) -> None:
    """A repair whose listing brings a new version of a group that now fails and of
    a measure in it must still finish (the measure is parked, its group failed):
    found by the stateful test (restart after compaction).  A repair that
    never finishes keeps the node ``repairing`` and queues every later repair
    request behind it forever."""
    reg = open_registry("memory://")
    await reg.put(group("g0"))
    await reg.put(measure("g0", "m0"))
    fast: dict[str, Any] = {
        "retry": RetryPolicy(max_attempts=2, base=0.001, cap=0.01), "repair_interval": 0,
        "repair_backoff_base": 0.02, "repair_backoff_cap": 0.05}
    async with Node(reg, name="prereq", state_dir=tmp_path, **fast) as node:
        await node.ready(10)
        assert await node.wait_for_revision(await reg.revision(), 10)
    await reg.put(measure("g0", "m0", fields=("other",)))
    g0 = group("g0")
    g0.spec["resource_opts"]["shard_num"] = 2
    await reg.put(Resource.parse(g0.to_dict()))
    await reg.put(group("g1"))
    await reg.compact(await reg.revision())
    async with Node(reg, name="prereq", state_dir=tmp_path, handler=_FailingGroupHandler(),
                    **fast) as node:
        await node.ready(10)
        try:
            result = await asyncio.wait_for(node.repair("manual"), 10)
        except TimeoutError:
            raise AssertionError(f"a manual repair never ran: {node.status()}") from None
        assert result["outcome"] == "partial", result
        assert [f["key"] for f in node.failures()] == ["group/g0"]
        assert node.blocked() == [{"key": "measure/g0/m0", "blocked_by": ["group/g0"]}]
    await reg.close()
