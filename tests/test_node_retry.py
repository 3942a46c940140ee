"""Retry timing alone: the one backoff function, the stateful limiter, the work
queue's rate-limited adds, and a handler's ``TemporaryError(delay=…)``."""

from __future__ import annotations

import asyncio
import random

import pytest

from polling import until
from schemacache import TemporaryError
from schemacache.backoff import DEFAULT_BASE, DEFAULT_CAP, compute_backoff
from schemacache.node.queue import PRIO_LIVE, PRIO_REPAIR, PRIO_RETRY, WorkQueue
from schemacache.node.retry import RetryLimiter, RetryPolicy

# ---------------------------------------------------------------- compute_backoff


def test_backoff_bound_doubles_up_to_the_cap() -> None:
    bounds = [compute_backoff(n, base=0.1, cap=1.0, jitter=False) for n in range(0, 7)]
    assert bounds == pytest.approx([0.1, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert compute_backoff(10_000, base=0.1, cap=7.0, jitter=False) == 7.0  # no overflow
    assert compute_backoff(1, jitter=False) == DEFAULT_BASE
    assert compute_backoff(100, jitter=False) == DEFAULT_CAP


def test_backoff_full_jitter_spreads_over_zero_to_bound() -> None:
    random.seed(11)
    draws = [compute_backoff(4, base=0.1, cap=10.0) for _ in range(2000)]
    assert all(0.0 <= d <= 0.8 for d in draws)
    # Full jitter, not "half jitter": draws reach well below half the bound.
    assert min(draws) < 0.05 and max(draws) > 0.75
    assert 0.35 < sum(draws) / len(draws) < 0.45


# ---------------------------------------------------------------- RetryLimiter


def test_limiter_counts_per_key_and_exhausts() -> None:
    limiter = RetryLimiter(RetryPolicy(max_attempts=3, base=1.0, cap=10.0, jitter="none"))
    assert limiter.when("a", 5) == 1.0
    assert limiter.when("a", 5) == 2.0
    assert limiter.attempts("a") == 2 and limiter.attempts("a", 5) == 2
    assert limiter.attempts("a", 6) == 0 and limiter.attempts("b") == 0
    assert limiter.when("b", 5) == 1.0  # keys are independent
    assert limiter.when("a", 5) is None  # third failure: used up
    assert limiter.attempts("a") == 3 and limiter.first_failed("a") is not None
    limiter.forget("a")
    assert limiter.attempts("a") == 0 and limiter.first_failed("a") is None
    assert limiter.when("a", 5) == 1.0


def test_limiter_starts_again_at_a_new_revision() -> None:
    limiter = RetryLimiter(RetryPolicy(max_attempts=2, base=1.0, jitter="none"))
    assert limiter.when("a", 5) == 1.0
    assert limiter.when("a", 6) == 1.0  # not exhausted: a new version's first failure
    assert limiter.revision("a") == 6 and limiter.attempts("a") == 1


def test_unexhaustible_limiter_keeps_backing_off() -> None:
    limiter = RetryLimiter(RetryPolicy(max_attempts=1, base=5.0, cap=20.0, jitter="none"),
                           exhaustible=False)
    assert [limiter.when("a", 1) for _ in range(5)] == [5.0, 10.0, 20.0, 20.0, 20.0]


def test_limiter_honours_a_requested_delay_capped() -> None:
    limiter = RetryLimiter(RetryPolicy(max_attempts=3, base=1.0, cap=10.0))
    assert limiter.when("a", 1, delay=4.0) == 4.0
    assert limiter.when("a", 1, delay=99.0) == 10.0
    assert limiter.when("a", 1, delay=0.5) is None  # a requested delay adds no attempts


def test_limiter_forgets_above_a_revision() -> None:
    limiter = RetryLimiter(RetryPolicy())
    limiter.when("a", 3)
    limiter.when("b", 7)
    assert limiter.forget_above(5) == ["b"]
    assert "a" in limiter and "b" not in limiter and len(limiter) == 1
    limiter.clear()
    assert len(limiter) == 0 and limiter.keys() == []


def test_temporary_error_delay() -> None:
    assert TemporaryError("x").delay is None
    assert TemporaryError("x", delay=2.5).delay == 2.5
    with pytest.raises(ValueError):
        TemporaryError("x", delay=-1)


# ---------------------------------------------------------------- WorkQueue rate limiting


async def test_rate_limited_key_is_held_until_its_delay_runs_out() -> None:
    q = WorkQueue()
    limiter = RetryLimiter(RetryPolicy(max_attempts=5, base=0.2, jitter="none"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert q.add_rate_limited("a", limiter, 1) == 0.2
    assert q.is_held("a") and len(q) == 0
    q.add("a", PRIO_LIVE)  # held: an add does not bring it back early
    assert len(q) == 0 and q.pop_nowait() is None
    key, prio = await asyncio.wait_for(q.pop(), 5.0)
    assert (key, prio) == ("a", PRIO_RETRY)
    assert loop.time() - started >= 0.2 - 0.01
    assert not q.is_held("a")
    q.shutdown()


async def test_hold_takes_a_queued_key_out_and_cancel_releases_it() -> None:
    q = WorkQueue()
    q.add("a", PRIO_LIVE)
    assert q.urgent == 1
    q.hold("a", 60.0, PRIO_REPAIR)
    assert len(q) == 0 and q.urgent == 0 and q.pop_nowait() is None
    q.cancel_timer("a")
    assert not q.is_held("a") and not q.has_timer("a")
    q.add("a", PRIO_REPAIR)
    assert q.pop_nowait() == ("a", PRIO_REPAIR)
    q.shutdown()


async def test_rate_limited_while_processing_is_not_requeued_by_done() -> None:
    q = WorkQueue()
    limiter = RetryLimiter(RetryPolicy(max_attempts=5, base=30.0, jitter="none"))
    q.add("a")
    assert q.pop_nowait() == ("a", PRIO_LIVE)
    q.add("a")  # changed while processing
    q.add_rate_limited("a", limiter, 1)  # ... and its attempt failed
    q.done("a")
    assert q.pop_nowait() is None and q.is_held("a")
    q.shutdown()
    assert not q.is_held("a")


async def test_exhausted_key_is_not_queued() -> None:
    q = WorkQueue()
    limiter = RetryLimiter(RetryPolicy(max_attempts=1))
    assert q.add_rate_limited("a", limiter, 1) is None
    assert not q.is_held("a") and not q.has_timer("a") and len(q) == 0
    q.shutdown()


async def test_handler_requested_delay_is_honoured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A handler raising ``TemporaryError(delay=0.6)`` is called again no sooner
    than 0.6 s later, though the policy's own backoff is 1 ms."""
    from factories import group
    from schemacache import open_registry
    from schemacache.node import Node

    loop = asyncio.get_running_loop()
    calls: list[float] = []

    class Slow:
        async def apply(self, resource: object) -> None:
            calls.append(loop.time())
            if len(calls) == 1:
                raise TemporaryError("busy", delay=0.6)

        async def delete(self, resource: object) -> None:
            pass

    reg = open_registry("memory://")
    async with Node(reg, name="n1", state_dir=tmp_path, handler=Slow(), repair_interval=0,
                    retry=RetryPolicy(max_attempts=3, base=0.001, cap=5.0)) as node:
        await node.ready()
        await reg.put(group("g0"))
        await until(lambda: len(calls) >= 2, "the second call", within=10.0)
        assert calls[1] - calls[0] >= 0.6 - 0.02
        await until(lambda: node.status()["cache"]["size"] == 1, "the group applied",
                    within=10.0)
        assert len(calls) == 2 and node.status()["failures"] == []
        status = node.status()
        # settled_revision, and applied_revision as its documented alias.
        assert status["settled_revision"] == status["applied_revision"] == node.settled_revision
        assert node.settled_revision >= 1
