"""Hypothesis stateful test: one node against the memory registry, DESIGN.md invariants 1-7.

The machine drives a real :class:`schemacache.Node` (memory registry, durable
state in a temporary directory) with random writes and deletes of a small
key space (two groups with two measures each, so that dependencies matter),
a handler whose failures are switched per key (transient: a retryable error;
permanent: :class:`PermanentError`), writes that land while the same key's
apply is still running, manual repairs, clean restarts with the same state
directory, and restarts after the registry compacted away the node's resume
point.  Two plain tests below pin down node bugs this machine and the crash
test found.

It is a black-box test: it drives and observes the node only through its
public surface -- the handler (every call it receives, in order), ``status()``
(revisions, failures, blocked keys, repair state, digest), ``cache``,
``failures()``, ``repair()`` and ``wait_for_revision`` -- so the node's
internals can be redesigned freely.  The machine keeps the registry's whole
history from its own watch, so it knows, for every call, which version and
which life of a key the handler was handed.

Each rule ends by *settling* the node (polled with a deadline): it received
every write (``status()["received_revision"]``), no handler call is in
flight, no repair runs or waits,
and every key is either held by the cache at the registry's version, or
recorded as failed at (or after) the key's newest write, or blocked.  Keys recorded as
failed keep being retried by repair in the background, with a short backoff.

What is checked, and where:

1. convergence -- rule ``converge`` and the end of every case: faults cleared
   and a manual repair run, the cache, its digest and the handler's own state
   equal the registry (key -> ``mod_revision``); ``wait_for_revision`` of the
   registry's revision succeeds; no failure and no blocked key is left;
2. monotonic per key -- every handler call, failed ones included (the handler
   received them), across restarts too: a call's *position* is its version
   for an apply, and the revision of the delete that ended that version's life
   for a delete; positions never decrease, after a delete only a newer life
   follows, and no call goes below the newest write of the key the node had
   received at an earlier settle point (a stale listing must not bring back an
   older version); a delete hands the handler exactly the version it holds;
3. bounded retries -- calls per (key, position, node lifetime) made while the
   node has no failure record for that version never exceed ``max_attempts``;
   repair's retries of a recorded failure are not counted, nor is the
   start-up replay;
4. no head-of-line blocking -- after settling, every present key that is not
   faulty and whose group is not faulty is in the cache at the registry's
   version, and every deleted key is gone unless it or a resource still
   cached under it is faulty, whatever other keys are failing;
5. durability -- on restart the handler is replayed the cache the node had at
   stop, each key at that version or, where a call had not succeeded, a newer
   one or its delete (never an older one); the failure records held before the
   stop are kept, and the cache holds the same keys at the same or
   newer versions;
6. nothing dropped -- the settle condition itself: the node received every
   write and each key is applied, failed at its newest revision, or blocked;
7. compaction -- rule ``compact_while_stopped``: keys deleted while the node
   was stopped and the history compacted reach the handler as deletes after
   the restart.

Cases run derandomized (stable in CI); set ``SCHEMACACHE_STATEFUL_EXAMPLES`` to
run that many random cases instead.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Awaitable, Coroutine, Iterator
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


@dataclass
class _Call:
    """One handler call as the handler saw it."""

    op: str
    key: str
    version: int
    """``mod_revision`` of the resource handed over (for a delete: the version deleted)."""
    failed: bool
    lifetime: int
    replay: bool
    """Made while ``Node.start()`` ran (the start-up replay)."""
    failure_revision: int | None
    """Revision of the node's failure record for the key when the call began."""


class _FaultHandler:
    """An async handler that fails on command, keeps what it applied and logs every call.

    ``state`` is the handler's in-memory state (key -> version), lost on every
    restart and rebuilt by the node's replay, as a real handler's would be.
    """

    def __init__(self) -> None:
        self.faults: dict[str, str] = {}
        self.state: dict[str, int] = {}
        self.calls: list[_Call] = []
        self.node: Node | None = None
        self.lifetime = 0
        self.replaying = False
        self.deleted: list[str] = []
        self.violations: list[str] = []
        self.in_flight = 0
        """Handler calls begun and not returned yet."""
        self.hold: str | None = None
        """Applies of this key wait for :attr:`release` (a call in flight)."""
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def _failure_revision(self, key: str) -> int | None:
        node = self.node
        if node is None or self.replaying:
            return None
        return next((int(f["revision"]) for f in node.failures() if f["key"] == key), None)

    def _log(self, op: str, resource: Resource) -> _Call:
        call = _Call(op, resource.key, resource.mod_revision, True, self.lifetime,
                     self.replaying, self._failure_revision(resource.key))
        self.calls.append(call)
        return call

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _maybe_fail(self, key: str) -> None:
        mode = self.faults.get(key, "none")
        if mode == "transient":
            raise TemporaryError(f"injected transient fault on {key}")
        if mode == "permanent":
            raise PermanentError(f"injected permanent fault on {key}")

    async def apply(self, resource: Resource) -> None:
        call = self._log("apply", resource)
        with self._running():
            if resource.key == self.hold:
                self.held.set()
                await self.release.wait()
            self._maybe_fail(resource.key)
        call.failed = False
        self.state[resource.key] = resource.mod_revision

    async def delete(self, resource: Resource) -> None:
        call = self._log("delete", resource)
        with self._running():
            self._maybe_fail(resource.key)
        call.failed = False
        held = self.state.get(resource.key)
        # Holding nothing is fine: the replay of that version may have failed.
        # A newer version than the one held is too: its apply was handed and
        # failed, and naming the older one would hand versions out of order
        # (the order itself is checked over all calls, see _check_calls).
        if held is not None and resource.mod_revision < held:
            self.violations.append(f"delete of {resource.key} handed version "
                                   f"{resource.mod_revision}, the handler holds {held}")
        self.state.pop(resource.key, None)
        self.deleted.append(resource.key)


@dataclass
class _Floor:
    value: int
    strict: bool  # set by a delete: only a newer life may follow

    def admits(self, position: int, is_apply: bool) -> bool:
        return position > self.value if (self.strict and is_apply) else position >= self.value


class NodeMachine(RuleBasedStateMachine):
    """Random writes, faults, repairs and restarts against one node."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.state_dir = tempfile.mkdtemp(prefix="sc-stateful-")
        self.registry: MemoryRegistry = self._memory_registry()
        self.handler = _FaultHandler()
        self.node: Node | None = None
        self.violations = self.handler.violations
        self.checked = 0
        """Handler calls checked so far (:meth:`_check_calls`)."""
        self.floor: dict[str, _Floor] = {}
        self.received_floor: dict[str, _Floor] = {}
        self.event_calls: Counter[tuple[str, int, int]] = Counter()
        self.present: dict[str, int] = {}
        """Registry keys -> mod_revision, as the machine's own watch saw them."""
        self.last_write: dict[str, int] = {}
        """Key -> revision of its newest write (put or delete)."""
        self.deletes: dict[str, list[int]] = defaultdict(list)
        """Key -> revisions of its deletes, in order."""
        self.seen_revision = 0
        self.history = self.loop.create_task(self._follow_registry())
        self.before_stop: tuple[dict[str, int], dict[str, tuple[int, str]]] = ({}, {})

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
                self.deletes[change.key].append(change.revision)
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
        handler = self.handler
        handler.lifetime += 1
        handler.state.clear()
        handler.node = node
        handler.replaying = True
        try:
            await node.start()
        finally:
            handler.replaying = False
        self.node = node

    def _cached(self) -> dict[str, int]:
        return {r.key: r.mod_revision for r in self.live.cache.list()}

    def _unsettled(self, status: dict[str, Any]) -> list[str]:
        """Keys neither cached at the registry's version, nor failed at their newest
        revision, nor blocked (DESIGN.md: settled keys)."""
        failed = {f["key"]: f["revision"] for f in status["failures"]}
        blocked = {b["key"] for b in status["blocked"]}
        cached = self._cached()
        # A failed delete found by a repair's listing is recorded at that listing's
        # revision, which can be newer than the delete itself.
        return [key for key in KEYS
                if cached.get(key) != self.present.get(key) and key not in blocked
                and failed.get(key, -1) < self.last_write.get(key, 0)]

    async def _settle(self) -> None:
        node = self.live

        async def quiet() -> bool:
            head = await self.registry.revision()
            status = node.status()
            return (status["received_revision"] >= head and self.seen_revision >= head
                    and self.handler.in_flight == 0
                    and not status["repair"]["running"] and not status["repair"]["pending"]
                    and not self._unsettled(status))

        async def still_quiet() -> bool:
            # Twice, a poll apart: a handler call that just returned is seen by the
            # node on its next turn of the loop.
            if not await quiet():
                return False
            await asyncio.sleep(SETTLE_POLL)
            return await quiet()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        while not await still_quiet():
            if loop.time() > deadline:
                status = node.status()
                raise AssertionError(
                    f"6: node did not settle in {SETTLE_TIMEOUT}s: {status}; registry at "
                    f"{await self.registry.revision()}, machine saw {self.seen_revision}, "
                    f"unsettled {self._unsettled(status)}, cache {self._cached()}, "
                    f"registry {self.present}")
            await asyncio.sleep(SETTLE_POLL)
        # Every call so far can be placed in the registry's history now ...
        self._check_calls()
        # ... and the node received every write: nothing older may be handed later.
        for key, revision in self.last_write.items():
            self.received_floor[key] = _Floor(revision, key not in self.present)

    def _ended_by(self, key: str, version: int) -> int | None:
        deletes = self.deletes.get(key, [])
        i = bisect.bisect_right(deletes, version)
        return deletes[i] if i < len(deletes) else None

    def _check_calls(self) -> None:
        """Invariants 2 and 3 over the handler calls made since the last check."""
        calls = self.handler.calls
        for call in calls[self.checked:]:
            what = f"{'failed ' if call.failed else ''}{call.op} {call.key} {call.version}"
            position = call.version
            if call.op == "delete":
                ended = self._ended_by(call.key, call.version)
                if ended is None:
                    self.violations.append(f"{what}: that version was never deleted")
                    continue
                position = ended
            is_apply = call.op == "apply"
            for name, floors in (("after", self.floor), ("received", self.received_floor)):
                floor = floors.get(call.key)
                if floor is not None and not floor.admits(position, is_apply):
                    self.violations.append(
                        f"{what} (position {position}) went back: {name} "
                        f"{'delete at' if floor.strict else 'version'} {floor.value}")
            floor = self.floor.get(call.key)
            self.floor[call.key] = _Floor(max(position, floor.value if floor else 0),
                                          not is_apply)
            recorded = call.failure_revision is not None and call.failure_revision >= position
            if not call.replay and not recorded:
                self.event_calls[(call.key, position, call.lifetime)] += 1
        self.checked = len(calls)

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
                while self.live.status()["received_revision"] < head:  # noqa: ASYNC110
                    await asyncio.sleep(SETTLE_POLL)  # the watch must deliver it during the apply
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
        self.before_stop = (
            self._cached(),
            {f["key"]: (f["revision"], f["first_failed"]) for f in self.live.failures()},
        )
        await self.live.stop()
        self.node = None

    async def _start_checked(self) -> None:
        """Start again and check durability (5) against the state at :meth:`_stop`."""
        cached, failures = self.before_stop
        first = len(self.handler.calls)
        await self._start()
        replayed: dict[str, int] = {}
        redeleted: set[str] = set()
        for call in self.handler.calls[first:]:
            if call.replay and call.op == "apply":
                replayed[call.key] = max(replayed.get(call.key, 0), call.version)
            elif call.replay:
                redeleted.add(call.key)
        # The handler's state is rebuilt from what was applied, or a newer version (or
        # a delete) where a call had not succeeded: never an older one ...
        behind = {k: (v, replayed.get(k)) for k, v in cached.items()
                  if k not in redeleted and replayed.get(k, -1) < v}
        assert not behind, f"5: not replayed at the applied version: {behind}"
        # ... failure records survive (a replay that fails again may add new ones) ...
        loaded = {f["key"]: (f["revision"], f["first_failed"]) for f in self.live.failures()}
        kept = {k: loaded.get(k) for k in failures}
        assert kept == failures, f"5: failures {loaded}, at stop {failures}"
        # ... and so does the cache (newer where the replay handed newer).
        now = self._cached()
        lost = {k: (v, now.get(k)) for k, v in cached.items()
                if k not in redeleted and now.get(k, -1) < v}
        assert not lost and set(now) <= set(cached) | set(replayed), (
            f"5: cache after restart {now}, at stop {cached}")
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
        event("compacted while stopped")
        # 7: every key cached before the stop and gone now was deleted through the
        # handler, unless a fault (its own or a dependent's still cached) holds it.
        now = await self._registry_map()
        cached = self._cached()
        delivered = set(self.handler.deleted[deletes_before:])
        for key in before:
            if key in now:
                continue
            held = key in self.handler.faults or any(_group_of(k) == key for k in cached)
            if not held:
                assert key in delivered, f"7: missed delete of {key} never reached the handler"
                assert key not in cached

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
        expected = await self._registry_map()
        assert await node.wait_for_revision(await self.registry.revision(), SETTLE_TIMEOUT)
        assert self._cached() == expected, "1: the cache differs from the registry"
        status = node.status()
        assert status["cache"]["digest"] == digest(expected.items())
        assert self.handler.state == expected, "1: the handler's state differs"
        assert status["failures"] == [] and status["blocked"] == []
        assert status["state"] == "ready"

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
    def no_head_of_line_blocking(self) -> None:
        if self.node is None:
            return
        faults = self.handler.faults
        cached = self._cached()
        for key, revision in self.present.items():
            prerequisite = _group_of(key)
            if key in faults or (prerequisite is not None and prerequisite in faults):
                continue
            assert cached.get(key) == revision, (
                f"4: {key} (no failing prerequisite) is not applied at {revision}: "
                f"{cached.get(key)}; faults {faults}, blocked {self.live.blocked()}")
        for key in cached:
            if key in self.present or key in faults:
                continue
            held_by = [k for k in cached if _group_of(k) == key]
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
