"""The collector pauses a node uses around bulk decoding and catch-up bursts."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import group, measure
from schemacache import _gc, open_registry
from schemacache._gc import BurstPause, gc_paused
from schemacache.node import Node

WAIT = 10.0


class _Node:
    next: object = None


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        (gc.enable if was_enabled else gc.disable)()


def test_pause_is_shared_across_threads_and_the_last_one_out_restores() -> None:
    entered, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with gc_paused():
            entered.set()
            release.wait(WAIT)

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        assert entered.wait(WAIT)
        assert not gc.isenabled()
        with gc_paused():
            release.set()
            worker.join(WAIT)
            assert not worker.is_alive()
            assert not gc.isenabled(), "the other thread's exit must not end this pause"
        assert gc.isenabled()
    finally:
        release.set()
        worker.join(WAIT)


def test_pause_keeps_a_collector_that_was_off_off() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_burst_ends_with_one_collection_and_freezes_survivors() -> None:
    burst = BurstPause()
    burst.start()
    burst.start()  # idempotent: one pause, not two
    assert burst.active and not gc.isenabled()
    survivors = [{"n": i} for i in range(1000)]
    cycle = _Node()
    cycle.next = cycle  # garbage with a cycle: only the collector frees it
    gone = weakref.ref(cycle)
    del cycle
    frozen_before = gc.get_freeze_count()
    burst.end()
    assert gc.isenabled() and not burst.active
    assert gc.get_freeze_count() >= frozen_before + len(survivors)
    assert gone() is None, "the cycle was collected, not frozen"


def test_burst_cut_short_gives_the_collector_back_without_collecting() -> None:
    burst = BurstPause()
    burst.start()
    frozen_before = gc.get_freeze_count()
    burst.end(settle=False)
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before


async def test_a_stopped_node_is_freed_although_its_sync_froze_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that stops a node and starts another must not keep the first
    one's cache: frozen objects are never collected."""
    # A small node stands for a large one: any number of objects given back counts.
    monkeypatch.setattr(_gc, "COLLECT_AFTER_THAWING", 0)
    registry = open_registry("memory://")
    await registry.apply([group("g1"), *(measure("g1", f"m{i}") for i in range(50))])
    first = Node(registry, name="n1", state_dir=str(tmp_path / "n1"), handler=None,
                 repair_interval=0)
    await first.start()
    await first.ready(WAIT)
    assert gc.get_freeze_count() > 0, "the sync froze what it built"
    await first.stop()
    gone = weakref.ref(first)
    del first
    second = Node(registry, name="n2", state_dir=str(tmp_path / "n2"), handler=None,
                  repair_interval=0)
    await second.start()
    await second.ready(WAIT)
    await second.stop()
    await registry.close()
    assert gone() is None, "the first node must not stay frozen for good"
