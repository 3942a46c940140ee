"""(c) Repair of many resources and (d) restart to ready without a full listing.

One registry holds N resources.  (c) A node with empty state starts: the clock
runs from ``start()`` to ``ready()`` (list, apply every resource, commit);
then a manual repair with nothing to do is timed.  (d) That node stops and a
new one starts on the same state directory: the clock runs from ``start()``
to ``ready()`` (load state.db, re-apply the applied resources to the handler,
resume the watch); the registry's ``list`` must not be called.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from schemacache import Registry, open_registry
from schemacache.node import Node

from .common import (
    LogCapture,
    Result,
    Stopwatch,
    collect_garbage,
    etcd_registry_url,
    stop_node,
)
from .handlers import NoopHandler
from .workload import seed

TARGET_REPAIR_SECONDS = 5.0
TARGET_RESTART_SECONDS = 3.0
READY_TIMEOUT = 600.0
_REPLAY_RE = r"re-applied (\d+) and re-deleted \d+ resources to the handler in ([0-9.]+)s"


def _count_lists(registry: Registry) -> dict[str, int]:
    """Count calls of ``registry.list`` (wraps the bound method on the instance)."""
    calls = {"list": 0}
    original = registry.list

    async def counting(prefix: str = "") -> Any:
        calls["list"] += 1
        return await original(prefix)

    registry.list = counting  # type: ignore[method-assign]
    return calls


def _node(registry: Registry, state_dir: str) -> Node:
    return Node(registry, name="bench-cd", state_dir=state_dir, handler=NoopHandler(),
                repair_interval=0)


async def run(backend: str, count: int, sections: str = "cd") -> list[Result]:
    """Measure (c) and/or (d) with ``count`` resources on ``backend`` (memory, sqlite
    or etcd: a one-member etcd of its own).

    :param sections: which of ``c`` and ``d`` to report (``d`` needs the state ``c`` builds).
    """
    with tempfile.TemporaryDirectory(prefix="bench-cd-") as tmp:
        workdir = Path(tmp)
        if backend == "etcd":
            async with etcd_registry_url() as url:
                return await _run_on(backend, url, workdir, count, sections)
        url = "memory://" if backend == "memory" else f"sqlite:///{workdir / 'registry.db'}"
        return await _run_on(backend, url, workdir, count, sections)


async def _run_on(backend: str, url: str, workdir: Path, count: int,
                  sections: str) -> list[Result]:
    registry = open_registry(url)
    try:
        with LogCapture() as capture:
            return await _measure(backend, registry, str(workdir / "node"), count, sections,
                                  capture)
    finally:
        await registry.close()


async def _measure(backend: str, registry: Registry, state_dir: str, count: int,
                   sections: str, capture: LogCapture) -> list[Result]:
    with Stopwatch() as seed_sw:
        await seed(registry, count)
    with Stopwatch() as list_sw:
        listed, _ = await registry.list()
    total = len(listed)
    del listed
    results: list[Result] = []

    collect_garbage()
    node = _node(registry, state_dir)
    started = time.perf_counter()
    await node.start()
    await node.ready(READY_TIMEOUT)
    sync_s = time.perf_counter() - started
    await node.flush()
    durable_s = time.perf_counter() - started
    assert len(node.cache) == total, (len(node.cache), total)
    collect_garbage()
    with Stopwatch() as repair_sw:
        outcome = await node.repair()
    await stop_node(node)
    del node  # freed by collect_garbage() before the restart, not on its clock
    if "c" in sections:
        results.append(Result(
            "c", f"initial sync of {total:,} resources, {backend}", sync_s, "s",
            TARGET_REPAIR_SECONDS, better="lower",
            note=(f"empty state, start() -> ready(); state committed after {durable_s:.2f}s; "
                  f"list() alone {list_sw.seconds:.2f}s; seeding took {seed_sw.seconds:.0f}s"),
            extra={"resources": total, "ready_seconds": sync_s, "durable_seconds": durable_s,
                   "list_seconds": list_sw.seconds}))
        results.append(Result(
            "c", f"repair with nothing to do, {total:,} resources, {backend}",
            repair_sw.seconds, "s", TARGET_REPAIR_SECONDS, better="lower",
            note=f"Node.repair(): outcome {outcome.get('outcome')}, "
                 f"{outcome.get('enqueued')} keys enqueued",
            extra={"result": outcome}))
    if "d" not in sections:
        return results

    lists = _count_lists(registry)
    capture.messages.clear()
    collect_garbage()
    node = _node(registry, state_dir)
    started = time.perf_counter()
    await node.start()
    await node.ready(READY_TIMEOUT)
    restart_s = time.perf_counter() - started
    size = len(node.cache)
    repairs = node.status()["repair"]["count"]
    await stop_node(node)
    replays = capture.find(_REPLAY_RE)
    replay = float(replays[-1].group(2)) if replays else None
    replay_text = f"{replay:.2f}s" if replay is not None else "n/a"
    ok = lists["list"] == 0 and size == total
    results.append(Result(
        "d", f"restart to ready, {total:,} applied, {backend}", restart_s if ok else None,
        "s", TARGET_RESTART_SECONDS, better="lower",
        note=(f"start() -> ready() on the same state.db; of which handler replay "
              f"{replay_text}; registry list() calls {lists['list']}, repairs {repairs}, "
              f"cache {size:,}"),
        extra={"seconds": restart_s, "list_calls": lists["list"], "replay_seconds": replay,
               "cache_size": size}))
    return results
