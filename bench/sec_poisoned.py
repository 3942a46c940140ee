"""(e) One poisoned key: schemacache against the retry-forever baseline.

Both designs get the same handler (a fixed amount of CPU work per call; it
always fails for the poisoned key) and the same feed: a writer in this process
creates N other keys as fast as it can, after one poisoned write, and the
design under test follows the registry's watch.  Measured per design, with and
without the poisoned key: the other keys' throughput (N / time from the first
other write until every other key was applied once) and, over a fixed window
from the poisoned write, the handler calls spent on the poisoned key
(extrapolated to a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time

from schemacache import Registry, Resource, open_registry
from schemacache.node import Node

from .baseline_retry_forever import RetryForeverConsumer
from .common import LogCapture, Result, collect_garbage, stop_node
from .workload import groups_for, measures, renamed, write_all

HANDLER_WORK_SECONDS = 50e-6
"""CPU time one handler call spends (busy), success or failure: a cheap handler."""
POISON_NAME = "poisoned"
TARGET_RATIO = 0.9
"""schemacache's throughput with a poisoned key over without: at least this
(invariant 4, no head-of-line blocking, with a 10 % allowance for noise)."""
RUN_TIMEOUT = 600.0
_REPAIR_RE = r"repair started \(reason (\w+)\)"
WARMUP_KEYS = 1000
"""Other keys of the untimed warm-up run of each design."""


class PoisonError(RuntimeError):
    """The poisoned key's handler call failed (as it always does)."""


class _Workload:
    """The handler both designs call.

    :param poisoned: the key that always fails (``None``: none fails).
    :param expected: other keys to wait for.
    """

    def __init__(self, poisoned: str | None, expected: int):
        self.poisoned = poisoned
        self.expected = expected
        self.applied: set[str] = set()
        self.poison_calls: list[float] = []
        self.calls = 0
        self.done = asyncio.Event()
        self.done_at = 0.0
        self.cpu_at = 0.0
        self.repairs: list[str] = []

    def call(self, key: str) -> None:
        self.calls += 1
        end = time.perf_counter() + HANDLER_WORK_SECONDS
        while time.perf_counter() < end:
            pass
        if key == self.poisoned:
            self.poison_calls.append(time.monotonic())
            raise PoisonError(f"{key} is poisoned")
        if key.startswith("group/"):
            return
        if key not in self.applied:
            self.applied.add(key)
            if len(self.applied) == self.expected:
                self.done_at = time.perf_counter()
                self.cpu_at = time.process_time()
                self.done.set()

    # Node handler interface
    async def apply(self, resource: Resource) -> None:
        self.call(resource.key)

    async def delete(self, resource: Resource) -> None:
        self.call(resource.key)


def _poison() -> Resource:
    template = next(measures(1, "x"))
    return renamed(template, POISON_NAME)


async def _feed(registry: Registry, poisoned: bool, count: int) -> tuple[float, float]:
    """Write the poisoned key (if any), then ``count`` others; returns the wall-clock
    (``perf_counter``) and process CPU (``process_time``) times of the first other write."""
    if poisoned:
        await registry.put(_poison())
    started = time.perf_counter(), time.process_time()
    await write_all(registry, measures(count, "o"))
    return started


async def _run_schemacache(poisoned: bool, count: int, window: float) -> _Workload:
    registry = open_registry("memory://")
    work = _Workload(_poison().key if poisoned else None, count)
    with tempfile.TemporaryDirectory(prefix="bench-e-") as tmp:
        await write_all(registry, groups_for(count))
        node = Node(registry, name="bench-e", state_dir=tmp, handler=work, repair_interval=0)
        await node.start()
        await node.ready(RUN_TIMEOUT)
        try:
            window_start = time.monotonic()
            with LogCapture() as capture:
                started = await _feed(registry, poisoned, count)
                await asyncio.wait_for(work.done.wait(), RUN_TIMEOUT)
            work.done_at -= started[0]
            work.cpu_at -= started[1]
            work.repairs = [m.group(1) for m in capture.find(_REPAIR_RE)]
            if poisoned:
                await asyncio.sleep(max(0.0, window_start + window - time.monotonic()))
                _trim(work, window_start + window)
        finally:
            await stop_node(node)
            await registry.close()
    return work


async def _run_baseline(poisoned: bool, count: int, window: float) -> _Workload:
    registry = open_registry("memory://")
    work = _Workload(_poison().key if poisoned else None, count)
    await write_all(registry, groups_for(count))
    start_rev = await registry.revision() + 1

    async def handler(key: str) -> None:
        work.call(key)

    consumer = RetryForeverConsumer(handler)

    async def follow() -> None:
        async for event in registry.watch("", start_revision=start_rev):
            consumer.put(event.key)

    window_start = time.monotonic()
    watcher = asyncio.create_task(follow())
    consuming = asyncio.create_task(consumer.run_until(
        lambda: work.done.is_set() and not poisoned, window_start + RUN_TIMEOUT))
    try:
        started = await _feed(registry, poisoned, count)
        await asyncio.wait_for(work.done.wait(), RUN_TIMEOUT)
        work.done_at -= started[0]
        work.cpu_at -= started[1]
        if poisoned:
            await asyncio.sleep(max(0.0, window_start + window - time.monotonic()))
            _trim(work, window_start + window)
    finally:
        for task in (consuming, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.close()
    return work


def _trim(work: _Workload, window_end: float) -> None:
    work.poison_calls = [t for t in work.poison_calls if t <= window_end]


async def run(count: int, window: float, repeats: int = 1) -> list[Result]:
    """Run the four combinations (design x poisoned) and derive the ratios.

    :param count: other keys written per run.
    :param window: seconds from the poisoned write over which its calls are counted.
    :param repeats: timed runs per combination, in rotating order; the median
        throughput is reported (default 1).
    """
    designs = {"baseline": _run_baseline, "schemacache": _run_schemacache}
    combos = [(d, p) for d in designs for p in (False, True)]
    # One short untimed run of each design first, so that no timed run pays
    # for first-use costs (imports, allocations) the others do not.
    for fn in designs.values():
        await fn(False, min(count, WARMUP_KEYS), 0.0)
    samples: dict[tuple[str, bool], list[_Workload]] = {c: [] for c in combos}
    for i in range(repeats):
        for design, poisoned in combos[i % len(combos):] + combos[:i % len(combos)]:
            collect_garbage()
            samples[(design, poisoned)].append(await designs[design](poisoned, count, 0.0))
    windowed: dict[str, _Workload] = {}
    for design, fn in designs.items():
        collect_garbage()
        windowed[design] = await fn(True, count, window)

    def rate(design: str, poisoned: bool) -> float:
        return count / statistics.median(w.done_at for w in samples[(design, poisoned)])

    def cpu_rate(design: str, poisoned: bool) -> float:
        return count / statistics.median(w.cpu_at for w in samples[(design, poisoned)])

    results: list[Result] = []
    for design, poisoned in combos:
        label = "with poisoned key" if poisoned else "clean"
        runs = samples[(design, poisoned)]
        if design == "baseline":
            how = "1 consumer, immediate re-enqueue"
        else:
            repairs = [reason for w in runs for reason in w.repairs]
            how = ("8 workers, default retry policy; repairs started before the last other "
                   "key applied: " + (", ".join(repairs) or "none"))
        results.append(Result(
            "e", f"other keys' throughput, {design}, {label}", rate(design, poisoned),
            "keys/s", note=f"median of {len(runs)}: "
                           + ", ".join(f"{count / w.done_at:,.0f}" for w in runs)
                           + f" (per CPU-second of this process: "
                           f"{cpu_rate(design, poisoned):,.0f}); {count} other keys, "
                           f"{HANDLER_WORK_SECONDS * 1e6:.0f} us of work per handler call; {how}",
            extra={"seconds": [w.done_at for w in runs], "cpu_seconds": [w.cpu_at for w in runs],
                   "repairs": [w.repairs for w in runs]}))
    ratios = {d: rate(d, True) / rate(d, False) for d in designs}
    cpu_ratios = {d: cpu_rate(d, True) / cpu_rate(d, False) for d in designs}
    cpu_note = "per CPU-second instead of wall-clock: {:.2f}"
    results.append(Result("e", "poisoned/clean throughput, baseline", ratios["baseline"], "x",
                          note=cpu_note.format(cpu_ratios["baseline"])))
    results.append(Result("e", "poisoned/clean throughput, schemacache", ratios["schemacache"],
                          "x", TARGET_RATIO,
                          note="target set here from invariant 4 (no head-of-line blocking); "
                               + cpu_note.format(cpu_ratios["schemacache"])))
    results.append(Result("e", "schemacache/baseline throughput, with poisoned key",
                          rate("schemacache", True) / rate("baseline", True), "x",
                          note=cpu_note.format(cpu_rate("schemacache", True)
                                               / cpu_rate("baseline", True))))
    for design, work in windowed.items():
        calls = len(work.poison_calls)
        results.append(Result(
            "e", f"poisoned-key handler calls per minute, {design}", calls * 60 / window,
            "calls/min", note=f"{calls} calls in a {window:.0f}s window from the poisoned "
                              "write, x60/window",
            extra={"calls_in_window": calls, "window_seconds": window}))
    return results
