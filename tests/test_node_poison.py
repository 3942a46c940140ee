"""A poisoned event: bounded retries, no head-of-line blocking, failure log,
metrics, webhook alert, repair with per-key backoff, resolve."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from factories import group, measure
from schemacache import open_registry
from schemacache.node import RetryPolicy
from schemacache.registry import Registry
from schemacache.testing import AlertReceiver
from test_node_core import DEADLINE, RecordingHandler, new_node, until

POISON = "measure/g/poison"
SLACK = 0.15
"""Seconds a timer may fire late on a busy 2-core machine."""


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[AlertReceiver, str]]:
    async with AlertReceiver() as rec:
        yield rec, rec.url


@pytest.fixture
async def reg() -> AsyncIterator[Registry]:
    r = open_registry("memory://")
    try:
        yield r
    finally:
        await r.close()


async def test_poisoned_event_full_jitter_bounds(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    h.fail[POISON] = RuntimeError("cannot open shard")
    policy = RetryPolicy(max_attempts=5, base=0.2, cap=0.5)
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60) as node:
        await node.ready(DEADLINE)
        rev = await reg.put(measure("g", "poison"))
        await until(lambda: bool(node.failures()), what="failure record")
        await until(lambda: node.status()["repair"]["count"] >= 2, what="exhausted repair")
        await until(lambda: not node.status()["repair"]["running"], what="repair done")
        calls = h.calls_for(POISON)
        assert len(calls) == policy.max_attempts
        assert {c[2] for c in calls} == {rev}
        gaps = [b[3] - a[3] for a, b in itertools.pairwise(calls)]
        for n, gap in enumerate(gaps, start=1):
            # uniform(0, bound) plus scheduling slack on a busy machine
            assert 0.0 <= gap <= policy.bound(n) + SLACK, (n, gap)
        f = node.failures()[0]
        assert (f["key"], f["revision"], f["attempts"]) == (POISON, rev, 5)


async def test_poisoned_event_does_not_block_others_and_heals(
    reg: Registry, tmp_path: Path, receiver: tuple[AlertReceiver, str]
) -> None:
    rx, url = receiver
    await reg.put(group("g"))
    h = RecordingHandler()
    h.fail[POISON] = RuntimeError("cannot open shard")
    # A long, deterministic backoff: other writes happen while the key waits.
    policy = RetryPolicy(max_attempts=2, base=1.5, cap=30.0, jitter="none")
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60,
                        alert_webhook=url) as node:
        await node.ready(DEADLINE)
        rev = await reg.put(measure("g", "poison"))
        await until(lambda: len(h.calls_for(POISON)) == 1, what="first attempt")
        last = 0
        for i in range(1000):
            last = await reg.put(measure("g", f"m{i}"))
        await until(lambda: len(h.calls_for(POISON)) == 2, what="retry")
        # Ordering, not timing: every other key was applied before the retry.
        second = h.calls.index(h.calls_for(POISON)[1])
        applied_before = {c[1] for c in h.calls[:second] if c[0] == "apply"}
        assert {f"measure/g/m{i}" for i in range(1000)} <= applied_before
        await until(lambda: bool(node.failures()), what="failure record")
        assert await node.wait_for_revision(last, DEADLINE)
        assert len(h.calls_for(POISON)) == policy.max_attempts
        await until(lambda: not node.status()["repair"]["running"], what="exhausted repair")

        st = node.status()
        assert st["state"] == "degraded"
        assert [(f["key"], f["revision"], f["attempts"]) for f in st["failures"]] == [
            (POISON, rev, 2)]
        assert "cannot open shard" in st["failures"][0]["last_error"]
        text = node.metrics.render().decode()
        assert 'schemacache_retries_exhausted_total{kind="measure"} 1.0' in text
        assert 'schemacache_retries_total{kind="measure"} 1.0' in text
        assert "schemacache_failed_keys 1.0" in text
        assert ('schemacache_handler_calls_total{kind="measure",op="apply",outcome="error"} 2.0'
                in text)
        await until(lambda: bool(rx.matching("SchemaEventRetriesExhausted")), what="webhook")
        firing = rx.matching("SchemaEventRetriesExhausted")
        assert len(firing) == 1
        labels = firing[0]["labels"]
        assert labels == {"alertname": "SchemaEventRetriesExhausted", "node": "n1",
                          "key": POISON, "severity": "warning"}
        assert "cannot open shard" in firing[0]["annotations"]["last_error"]
        assert not rx.matching("SchemaEventRetriesExhausted", resolved=True)

        # The fault clears: the next repair applies the key and resolves the alert.
        del h.fail[POISON]
        result = await node.repair()
        assert result["outcome"] == "ok"
        assert node.cache.get(POISON) is not None
        assert node.failures() == [] and node.status()["state"] == "ready"
        assert "schemacache_failed_keys 0.0" in node.metrics.render().decode()
        await until(lambda: bool(rx.matching("SchemaEventRetriesExhausted", resolved=True)),
                    what="resolve notification")
        resolved = rx.matching("SchemaEventRetriesExhausted", resolved=True)
        assert len(resolved) == 1 and resolved[0]["labels"]["key"] == POISON


async def test_repair_retries_a_failing_key_with_growing_gaps(
    reg: Registry, tmp_path: Path
) -> None:
    await reg.put(group("g"))
    h = RecordingHandler()
    h.fail[POISON] = RuntimeError("still broken")
    policy = RetryPolicy(max_attempts=1)
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=0.1,
                        repair_backoff_cap=0.8) as node:
        await node.ready(DEADLINE)
        await reg.put(measure("g", "poison"))
        await until(lambda: len(h.calls_for(POISON)) >= 7, what="repairs")
        calls = h.calls_for(POISON)
        window = calls[-1][3] - calls[0][3]
        gaps = [b[3] - a[3] for a, b in itertools.pairwise(calls)]
        # 0.1, 0.2, 0.4, 0.8 (cap), 0.8, 0.8: doubling then capped, never a tight loop.
        expected = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
        for gap, want in zip(gaps, expected, strict=False):
            assert want * 0.9 <= gap <= want + SLACK, (gaps, expected)
        assert window >= sum(expected) * 0.9
        f = node.failures()[0]
        assert f["attempts"] >= 7
        # The fault clears: the next per-key repair applies it.
        del h.fail[POISON]
        await until(lambda: node.cache.get(POISON) is not None, what="healed")
        assert node.failures() == []
