"""(b) Propagation delay commit -> applied over several node processes.

Each node runs as its own process with :class:`bench.handlers.RecordingHandler`,
which appends ``now - metadata.updated_at`` per apply to a per-node file.  A
writer in this process creates resources at a steady rate; the delays of all
nodes are pooled into p50/p99.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from schemacache import open_registry

from .common import Result, etcd_registry_url, percentile, wait_until
from .handlers import LATENCY_FILE_ENV, read_latencies
from .nodeprocs import NodeProcess
from .workload import group, groups_for, measures, write_all

TARGETS_P99 = {"sqlite": 0.050, "etcd": 0.020}
"""p99 propagation targets, seconds."""
HANDLER = "bench.handlers:RecordingHandler"
STARTUP_TIMEOUT = 120.0
"""Seconds the nodes get to start and apply the warm-up write."""
DRAIN_TIMEOUT = 60.0
"""Seconds the nodes get to record every write after the writer finished."""
WARMUP_GROUP = "bench-warmup"


async def run(backend: str, nodes: int, rate: float, seconds: float) -> list[Result]:
    """Measure on ``backend`` (``sqlite`` or ``etcd``).

    :param nodes: node processes.
    :param rate: writes per second.
    :param seconds: how long the writer writes.
    """
    with tempfile.TemporaryDirectory(prefix="bench-b-") as tmp:
        workdir = Path(tmp)
        if backend == "etcd":
            async with etcd_registry_url() as url:
                return await _measure(backend, url, workdir, nodes, rate, seconds)
        url = f"sqlite:///{workdir / 'registry.db'}"
        return await _measure(backend, url, workdir, nodes, rate, seconds)


async def _measure(backend: str, url: str, workdir: Path, nodes: int, rate: float,
                   seconds: float) -> list[Result]:
    count = max(1, int(rate * seconds))
    registry = open_registry(url)
    procs: list[NodeProcess] = []
    files = [str(workdir / f"latency-{i}.tsv") for i in range(nodes)]
    try:
        await write_all(registry, groups_for(count))
        for i in range(nodes):
            procs.append(NodeProcess(f"bench-b{i}", url, workdir, handler=HANDLER,
                                     env={LATENCY_FILE_ENV: files[i]}))
        warm = group(WARMUP_GROUP)
        await registry.put(warm)
        await _wait_all(procs, files, {warm.key}, STARTUP_TIMEOUT, "nodes to start")

        written: set[str] = set()
        started = time.perf_counter()
        for i, r in enumerate(measures(count, "p")):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await registry.put(r)
            written.add(r.key)
        write_s = time.perf_counter() - started
        await _wait_all(procs, files, written, DRAIN_TIMEOUT, "every write to be applied")
    finally:
        await asyncio.to_thread(_stop_all, procs)
        await registry.close()

    delays = [v for f in files for k, v in read_latencies(f).items() if k in written]
    per_node_p99 = [percentile([v for k, v in read_latencies(f).items() if k in written], 99)
                    for f in files]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    note = (f"{nodes} node processes, {count} creates at {count / write_s:,.0f}/s for "
            f"{write_s:.1f}s; {len(delays)} applies pooled")
    extra = {"nodes": nodes, "writes": count, "write_seconds": write_s,
             "p50": p50, "p90": percentile(delays, 90), "p99": p99, "max": max(delays),
             "per_node_p99": per_node_p99}
    return [
        Result("b", f"propagation p50, {backend}", p50 * 1000, "ms", note=note, extra=extra),
        Result("b", f"propagation p99, {backend}", p99 * 1000, "ms",
               TARGETS_P99[backend] * 1000, better="lower",
               note=f"max {max(delays) * 1000:.1f} ms; per node p99 "
                    + ", ".join(f"{v * 1000:.1f}" for v in per_node_p99)),
    ]


def _stop_all(procs: list[NodeProcess]) -> None:
    for p in procs:
        p.stop()


async def _wait_all(procs: list[NodeProcess], files: list[str], keys: set[str],
                    timeout: float, what: str) -> None:  # noqa: ASYNC109
    def done() -> bool:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"node {p.name} exited ({p.proc.returncode}): "
                                   f"{p.log_tail()}")
        return all(keys <= read_latencies(f).keys() for f in files)

    await wait_until(done, timeout, interval=0.2, what=what)

