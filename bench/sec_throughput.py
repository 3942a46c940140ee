"""(a) Events applied per second by one node, no-op handler, durable state on.

Catch-up: a node syncs, stops; N changes are written; the node starts again
and the clock runs from ``start()`` until it applied the last revision (and,
separately, until its state is committed).  The writer is done before the
clock starts, so it cannot be the bottleneck.  Live: a running node follows a
writer in the same process; that figure is bounded by the writer.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from schemacache import Registry, open_registry
from schemacache.node import Node

from .common import Result, Stopwatch, collect_garbage, stop_node, wait_applied
from .handlers import NoopHandler
from .workload import groups_for, measures, write_all

TARGET_EVENTS_PER_SECOND = 20_000.0
APPLY_TIMEOUT = 600.0
"""Seconds a node may take to apply a backlog before the run is abandoned."""


def _node(registry: Registry, state_dir: str) -> Node:
    return Node(registry, name="bench-a", state_dir=state_dir, handler=NoopHandler(),
                repair_interval=0)


def _registry_url(backend: str, workdir: Path) -> str:
    return "memory://" if backend == "memory" else f"sqlite:///{workdir / 'registry.db'}"


async def run(backend: str, events: int, live_events: int, repeats: int = 1) -> list[Result]:
    """Measure catch-up and live throughput on ``backend`` (``memory`` or ``sqlite``).

    :param events: changes written while the node is stopped.
    :param live_events: changes written while it runs (0 = skip the live figure).
    :param repeats: catch-up runs from the same stopped state; the median is
        reported (default 1).
    """
    with tempfile.TemporaryDirectory(prefix="bench-a-") as tmp:
        workdir = Path(tmp)
        url = _registry_url(backend, workdir)
        writer = open_registry(url)
        # The memory registry lives in this process: the node must share it.
        reader = writer if backend == "memory" else open_registry(url)
        try:
            return await _measure(backend, writer, reader, str(workdir / "node"), events,
                                  live_events, max(1, repeats))
        finally:
            if reader is not writer:
                await reader.close()
            await writer.close()


async def _measure(backend: str, writer: Registry, reader: Registry, state_dir: str,
                   events: int, live_events: int, repeats: int) -> list[Result]:
    groups = groups_for(events + live_events)
    await write_all(writer, groups)
    node = _node(reader, state_dir)
    await node.start()
    await node.ready(APPLY_TIMEOUT)
    await stop_node(node)
    del node  # freed by collect_garbage(), not on the first run's clock

    with Stopwatch() as write_sw:
        last = await write_all(writer, measures(events, "c"))

    # Each repeat starts from a copy of the state the stopped node left.
    pristine = state_dir + ".pristine"
    shutil.copytree(state_dir, pristine)
    timings: list[tuple[float, float]] = []
    for i in range(repeats):
        if i:
            shutil.rmtree(state_dir)
            shutil.copytree(pristine, state_dir)
        collect_garbage()
        node = _node(reader, state_dir)
        started = time.perf_counter()
        await node.start()
        await wait_applied(node, last, APPLY_TIMEOUT)
        applied_s = time.perf_counter() - started
        await node.flush()
        timings.append((applied_s, time.perf_counter() - started))
        if i < repeats - 1:  # the last one goes on to the live figure
            await stop_node(node)
            del node  # freed by collect_garbage(), not on the next run's clock
    applied_s, durable_s = sorted(timings)[len(timings) // 2]
    rate = events / applied_s
    runs = ", ".join(f"{events / a:,.0f}" for a, _ in timings)
    results = [Result(
        "a", f"catch-up throughput, {backend} registry", rate, "events/s",
        TARGET_EVENTS_PER_SECOND,
        note=(f"median of {repeats} ({runs}); {events} creates written while stopped; "
              f"start() -> applied {applied_s:.2f}s, -> committed to state.db {durable_s:.2f}s "
              f"({events / durable_s:,.0f}/s); writer alone {events / write_sw.seconds:,.0f}/s"),
        extra={"events": events, "applied_seconds": [a for a, _ in timings],
               "durable_seconds": [d for _, d in timings],
               "writer_events_per_second": events / write_sw.seconds})]

    if live_events:
        collect_garbage()
        started = time.perf_counter()
        last = await write_all(writer, measures(live_events, "l"))
        written_s = time.perf_counter() - started
        await wait_applied(node, last, APPLY_TIMEOUT)
        live_s = time.perf_counter() - started
        results.append(Result(
            "a", f"live throughput, {backend} registry", live_events / live_s, "events/s",
            note=(f"{live_events} creates by a writer in the same process "
                  f"({live_events / written_s:,.0f}/s while the node ran): bounded by the "
                  "writer, no target"),
            extra={"events": live_events, "seconds": live_s, "write_seconds": written_s}))
    await stop_node(node)
    return results
