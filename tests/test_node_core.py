"""Node core: sync, cache, work queue, retries, supersede, dependencies, backpressure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factories import group, measure
from schemacache import PermanentError, Resource, digest, open_registry
from schemacache.model import digest_of
from schemacache.node import Node, RetryPolicy, load_handler
from schemacache.node.queue import PRIO_LIVE, PRIO_REPAIR, PRIO_RETRY, WorkQueue
from schemacache.registry import Registry

DEADLINE = 10.0


async def until(cond: Callable[[], bool], within: float = DEADLINE, what: str = "") -> None:
    """Poll ``cond`` until true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


class RecordingHandler:
    """Records every call; ``fail`` maps a key to an exception (or a callable
    returning one, or None) raised on apply/delete of that key."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, float]] = []
        self.fail: dict[str, Any] = {}
        self.delay: dict[str, float] = {}
        self.state: dict[str, int] = {}

    def _maybe_fail(self, key: str) -> None:
        exc = self.fail.get(key)
        if callable(exc) and not isinstance(exc, BaseException) and not isinstance(exc, type):
            exc = exc()
        if exc is not None:
            raise exc

    async def apply(self, r: Resource) -> None:
        self.calls.append(("apply", r.key, r.mod_revision, time.monotonic()))
        if r.key in self.delay:
            await asyncio.sleep(self.delay[r.key])
        self._maybe_fail(r.key)
        self.state[r.key] = r.mod_revision

    async def delete(self, r: Resource) -> None:
        self.calls.append(("delete", r.key, r.mod_revision, time.monotonic()))
        self._maybe_fail(r.key)
        self.state.pop(r.key, None)

    def calls_for(self, key: str, op: str | None = None) -> list[tuple[str, str, int, float]]:
        return [c for c in self.calls if c[1] == key and (op is None or c[0] == op)]


async def registry_digest(reg: Registry) -> str:
    items, _ = await reg.list()
    return digest_of(items)


@pytest.fixture
async def reg() -> Any:
    r = open_registry("memory://")
    try:
        yield r
    finally:
        await r.close()


def new_node(reg: Registry, tmp_path: Path, handler: Any = None, **kw: Any) -> Node:
    kw.setdefault("repair_interval", 0)
    return Node(reg, name=kw.pop("name", "n1"), state_dir=tmp_path / kw.pop("dir", "state"),
                handler=handler, **kw)


# ---------------------------------------------------------------- retry policy


def test_retry_policy_bounds() -> None:
    p = RetryPolicy(max_attempts=5, base=0.1, cap=1.0)
    assert [p.bound(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    for n in range(1, 8):
        for _ in range(50):
            assert 0.0 <= p.delay(n) <= p.bound(n)
    assert RetryPolicy(base=0.5, jitter="none").delay(3) == 2.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter="half")  # type: ignore[arg-type]


# ---------------------------------------------------------------- work queue


async def test_queue_collapses_and_never_hands_a_key_to_two_workers() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b", PRIO_REPAIR)
    q.add("c", PRIO_RETRY)
    assert len(q) == 3
    assert q.pop_nowait() == ("a", PRIO_LIVE)
    q.add("a")  # changed while processing: not handed out again yet
    assert q.pop_nowait() == ("c", PRIO_RETRY)
    assert q.pop_nowait() == ("b", PRIO_REPAIR)
    assert q.pop_nowait() is None
    q.done("a")
    assert q.pop_nowait() == ("a", PRIO_LIVE)
    q.done("a")
    q.add("d", PRIO_REPAIR)
    q.add("d", PRIO_LIVE)  # promoted
    q.add("e", PRIO_LIVE)
    assert q.pop_nowait() == ("d", PRIO_LIVE)
    assert q.pop_nowait() == ("e", PRIO_LIVE)
    assert q.pop_nowait() is None
    assert q.urgent == 0


# ---------------------------------------------------------------- sync


async def test_initial_sync_watch_and_cache(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g1"))
    await reg.put(measure("g1", "m1"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        assert node.is_ready() and node.is_healthy()
        assert [c[1] for c in h.calls] == ["group/g1", "measure/g1/m1"]
        rev = await reg.put(measure("g1", "m2"))
        assert await node.wait_for_revision(rev, DEADLINE)
        assert node.cache.get("measure/g1/m2") is not None
        assert [r.key for r in node.cache.list(kind="measure")] == ["measure/g1/m1",
                                                                     "measure/g1/m2"]
        rev = await reg.delete("measure/g1/m1")
        assert await node.wait_for_revision(rev, DEADLINE)
        assert node.cache.get("measure/g1/m1") is None
        assert h.calls_for("measure/g1/m1", "delete")
        st = node.status()
        assert set(st) == {"node", "state", "settled_revision", "applied_revision",
                           "received_revision", "registry_revision", "lag", "registry",
                           "state_store", "cache", "failures", "blocked", "repair"}
        assert st["state_store"] == {"ok": True, "error": None}
        assert st["registry"] == {"cluster_id": await reg.cluster_id(), "rewinds": 0}
        assert st["node"] == "n1" and st["state"] == "ready"
        assert st["applied_revision"] == rev == st["received_revision"]
        assert st["cache"] == {"size": 2, "digest": await registry_digest(reg)}
        assert set(st["repair"]) == {"running", "pending", "count", "last_reason", "last_outcome",
                                     "last_finished"}
        assert st["repair"]["count"] == 1 and st["repair"]["last_outcome"] == "ok"
        assert st["repair"]["last_reason"] == "startup"
        snap = node.cache_snapshot()
        assert snap["applied_revision"] == rev
        assert [r["metadata"]["name"] for r in snap["resources"]] == ["g1", "m2"]
        assert not await node.wait_for_revision(rev + 1, 0.05)
        text = node.metrics.render().decode()
        assert 'schemacache_events_received_total{kind="measure",type="PUT"} 1.0' in text
        assert ('schemacache_handler_calls_total{kind="measure",op="delete",outcome="ok"} 1.0'
                in text)
        assert 'schemacache_repairs_total{outcome="ok",reason="startup"} 1.0' in text


async def test_cache_only_node_matches_registry_digest(reg: Registry, tmp_path: Path) -> None:
    for g in range(3):
        await reg.put(group(f"g{g}"))
        for m in range(5):
            await reg.put(measure(f"g{g}", f"m{m}"))
    async with new_node(reg, tmp_path) as node:
        await node.ready(DEADLINE)
        rev = await reg.delete("measure/g0/m0")
        assert await node.wait_for_revision(rev, DEADLINE)
        assert node.status()["cache"]["digest"] == await registry_digest(reg)
        assert node.status()["cache"]["size"] == 17


async def test_burst_for_one_key_collapses(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    h.delay["measure/g/m"] = 0.2
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        await reg.put(measure("g", "m"))
        await until(lambda: len(h.calls_for("measure/g/m")) == 1, what="first call")
        rev = 0
        for i in range(50):
            rev = await reg.put(measure("g", "m", fields=(f"f{i}",)))
        assert await node.wait_for_revision(rev, DEADLINE)
        calls = h.calls_for("measure/g/m")
        # One call in flight during the burst, then one for the newest version.
        assert len(calls) == 2
        assert calls[-1][2] == rev
        assert h.state["measure/g/m"] == rev


async def test_plain_handler_runs_in_a_thread(reg: Registry, tmp_path: Path) -> None:
    main_thread = threading.get_ident()
    seen: list[int] = []

    class Plain:
        def apply(self, r: Resource) -> None:
            seen.append(threading.get_ident())

        def delete(self, r: Resource) -> None:
            seen.append(threading.get_ident())

    await reg.put(group("g"))
    async with new_node(reg, tmp_path, Plain()) as node:
        await node.ready(DEADLINE)
        rev = await reg.delete("group/g")
        assert await node.wait_for_revision(rev, DEADLINE)
    assert len(seen) == 2 and main_thread not in seen


def test_load_handler() -> None:
    h = load_handler("test_node_core:RecordingHandler")
    assert isinstance(h, RecordingHandler)
    with pytest.raises(ValueError):
        load_handler("no_colon")
    with pytest.raises(ValueError):
        load_handler("test_node_core:DEADLINE")


# ---------------------------------------------------------------- retries


async def test_handler_timeout_is_a_failed_attempt(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    h.delay["group/g"] = 5.0
    async with new_node(reg, tmp_path, h, handler_timeout=0.05,
                        retry=RetryPolicy(max_attempts=2, base=0.01),
                        repair_backoff_base=60) as node:
        await until(lambda: bool(node.failures()), what="failure record")
        assert len(h.calls_for("group/g")) == 2
        assert "TimeoutError" in node.failures()[0]["last_error"]
        text = node.metrics.render().decode()
        assert ('schemacache_handler_calls_total{kind="group",op="apply",outcome="timeout"} 2.0'
                in text)


async def test_permanent_error_skips_retries(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    h.fail["group/g"] = PermanentError("bad schema")
    async with new_node(reg, tmp_path, h, repair_backoff_base=60) as node:
        await until(lambda: bool(node.failures()), what="failure record")
        await node.ready(DEADLINE)
        assert len(h.calls_for("group/g")) == 1
        f = node.failures()[0]
        assert f["key"] == "group/g" and f["attempts"] == 1 and "bad schema" in f["last_error"]
        assert node.status()["state"] == "degraded"


async def test_newer_revision_supersedes_a_failing_one(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    bad_rev: list[int] = []

    def fail_old() -> Exception | None:
        last = h.calls[-1]
        return RuntimeError("broken version") if last[2] in bad_rev else None

    h.fail["measure/g/m"] = fail_old
    backoff = 1.0  # the old version's retry is due this long after its failure
    policy = RetryPolicy(max_attempts=3, base=backoff, jitter="none")
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60) as node:
        await node.ready(DEADLINE)
        bad_rev.append(await reg.put(measure("g", "m")))
        await until(lambda: len(h.calls_for("measure/g/m")) == 1, what="first attempt")
        good = await reg.put(measure("g", "m", fields=("v2",)))
        assert await node.wait_for_revision(good, DEADLINE)
        assert node.cache.get("measure/g/m").mod_revision == good  # type: ignore[union-attr]
        assert node.failures() == []
        # The newer version applied at once (no backoff wait), the old one got 1 call.
        calls = h.calls_for("measure/g/m")
        assert [c[2] for c in calls] == [bad_rev[0], good]
        assert calls[1][3] - calls[0][3] < backoff
        # Its pending retry timer does not bring the old version back (nothing to poll
        # for: wait until the timer would have fired).
        await asyncio.sleep(backoff + 0.3)
        assert len(h.calls_for("measure/g/m")) == 2


# ---------------------------------------------------------------- dependencies


async def test_measure_parked_behind_failing_group(reg: Registry, tmp_path: Path) -> None:
    h = RecordingHandler()
    h.fail["group/g"] = RuntimeError("disk full")
    policy = RetryPolicy(max_attempts=2, base=0.01)
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60) as node:
        await node.ready(DEADLINE)
        await reg.put(group("g"))
        rev = await reg.put(measure("g", "m"))
        await until(lambda: bool(node.failures()), what="group failure")
        await until(lambda: bool(node.status()["blocked"]), what="measure parked")
        assert node.status()["blocked"] == [{"key": "measure/g/m", "blocked_by": ["group/g"]}]
        assert h.calls_for("measure/g/m") == []
        assert "schemacache_blocked_keys 1.0" in node.metrics.render().decode()
        # Other groups are not held back.
        other = await reg.put(group("other"))
        await until(lambda: node.cache.get("group/other") is not None, what="other group")
        assert other > rev
        del h.fail["group/g"]
        result = await node.repair()
        assert result["outcome"] == "ok"
        await until(lambda: node.cache.get("measure/g/m") is not None, what="measure applied")
        order = [c[1] for c in h.calls if c[0] == "apply" and c[1] != "group/other"]
        assert order[-2:] == ["group/g", "measure/g/m"]
        assert node.status()["blocked"] == [] and node.failures() == []
        assert node.status()["state"] == "ready"
        assert "schemacache_blocked_keys 0.0" in node.metrics.render().decode()


async def test_deletes_go_dependents_first(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    for i in range(10):
        await reg.put(measure("g", f"m{i}"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h, workers=4) as node:
        await node.ready(DEADLINE)
        rev = await reg.delete("group/g", cascade=True)
        assert await node.wait_for_revision(rev, DEADLINE)
        deletes = [c[1] for c in h.calls if c[0] == "delete"]
        assert deletes[-1] == "group/g" and len(deletes) == 11
        assert len(node.cache) == 0


async def test_initial_sync_applies_in_dependency_order(reg: Registry, tmp_path: Path) -> None:
    for g in range(5):
        await reg.put(group(f"g{g}"))
        for m in range(20):
            await reg.put(measure(f"g{g}", f"m{m}"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h, workers=8) as node:
        await node.ready(DEADLINE)
        applied_at = {c[1]: i for i, c in enumerate(h.calls)}
        for g in range(5):
            for m in range(20):
                assert applied_at[f"group/g{g}"] < applied_at[f"measure/g{g}/m{m}"]
        assert node.status()["repair"]["last_outcome"] == "ok"


# ---------------------------------------------------------------- backpressure


async def test_slow_handler_backpressures_the_watch(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    depth: list[int] = []
    limit = 20
    node = new_node(reg, tmp_path, h, workers=2, max_pending_keys=limit)

    async def slow_apply(r: Resource) -> None:
        depth.append(node._reconciler.queue.urgent)
        await asyncio.sleep(0.002)
        h.state[r.key] = r.mod_revision

    h.apply = slow_apply  # type: ignore[method-assign]
    async with node:
        await node.ready(DEADLINE)
        rev = 0
        for i in range(300):
            rev = await reg.put(measure("g", f"m{i}"))
        assert await node.wait_for_revision(rev, 30)
        assert len(h.state) == 301
        assert max(depth) <= limit
        # Backpressure did bite: at some point the queue was full.
        assert max(depth) >= limit - 2


async def test_registry_reset_rebuilds(tmp_path: Path) -> None:
    reg1 = open_registry("memory://")
    await reg1.put(group("old"))
    h = RecordingHandler()
    async with new_node(reg1, tmp_path, h) as node:
        await node.ready(DEADLINE)
    reg2 = open_registry("memory://")
    await reg2.put(group("new"))
    async with new_node(reg2, tmp_path, h) as node:
        await node.ready(DEADLINE)
        await until(lambda: node.cache.keys() == ["group/new"], what="reset applied")
        assert h.calls_for("group/old", "delete")
        assert node.status()["cache"]["digest"] == digest([("group/new", 1)])
        assert 'reason="reset"' in node.metrics.render().decode()
