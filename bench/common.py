"""What every benchmark section shares: results, waiting, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from schemacache import _gc
from schemacache.node import Node

from .nodeprocs import REPO

WAIT_SLICE = 0.01
"""Seconds of one :meth:`Node.wait_for_revision` call in :func:`wait_applied`: the
loop re-checks after each slice, so a wake-up the node might miss costs at most this."""


@dataclass
class Result:
    """One measured figure.

    :param section: section letter (``a`` … ``e``).
    :param name: what was measured.
    :param value: the figure (``None`` when it could not be measured).
    :param unit: its unit.
    :param target: the target, or ``None`` for an informational figure.
    :param better: ``"higher"`` or ``"lower"`` — which side of the target passes.
    :param note: how it was measured, or why it is missing.
    :param extra: further numbers kept in ``results.json``.
    """

    section: str
    name: str
    value: float | None
    unit: str
    target: float | None = None
    better: str = "higher"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "ERROR"
        if self.target is None:
            return "info"
        ok = self.value >= self.target if self.better == "higher" else self.value <= self.target
        return "PASS" if ok else "MISS"

    @property
    def margin(self) -> float | None:
        """How far past (positive) or short of (negative) the target, as a fraction."""
        if self.value is None or self.target is None or self.target == 0:
            return None
        if self.better == "higher":
            return self.value / self.target - 1
        return 1 - self.value / self.target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": self.verdict, "margin": self.margin}


def collect_garbage() -> None:
    """Free the cyclic garbage of earlier runs before a timed one.

    A stopped node or closed registry leaves reference cycles behind; left
    alone, the next run's collections would scan (and free) them on its clock.
    The collection a stopped node asks of the next start is made here too,
    off the clock: a node process in service starts once.
    """
    # Older code run as a same-sitting baseline (PYTHONPATH) has no such request.
    collect_thawed = getattr(_gc, "collect_thawed", None)
    if collect_thawed is not None:
        collect_thawed()
    gc.collect()


class LogCapture(logging.Handler):
    """Collects the messages of one logger (at INFO and above) while in a ``with`` block,
    to read figures the node logs (replay time, repair durations).

    :param logger: logger name (default ``"schemacache"``).
    """

    def __init__(self, logger: str = "schemacache") -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self._logger = logging.getLogger(logger)
        self._previous_level = self._logger.level

    def __enter__(self) -> LogCapture:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._previous_level)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def find(self, pattern: str) -> list[re.Match[str]]:
        """Every match of ``pattern`` in the messages collected so far, in order."""
        rx = re.compile(pattern)
        return [m for m in (rx.search(msg) for msg in self.messages) if m is not None]


class Stopwatch:
    """``with Stopwatch() as sw: …`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


async def wait_applied(node: Node, revision: int, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until ``node`` applied ``revision``; raises :class:`TimeoutError`.

    Waits in slices of :data:`WAIT_SLICE` rather than in one call, so that the
    measurement never depends on the node's wake-up being delivered.
    """
    deadline = time.monotonic() + timeout
    while node.applied_revision < revision:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"node {node.name} applied {node.applied_revision}, "
                               f"waited for {revision}")
        await node.wait_for_revision(revision, WAIT_SLICE)


async def wait_until(predicate: Any, timeout: float, interval: float = 0.05,  # noqa: ASYNC109
                     what: str = "condition") -> None:
    """Poll ``predicate()`` until true; raises :class:`TimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


STOP_TIMEOUT = 30.0
"""Seconds :func:`stop_node` waits for a node to stop."""


async def stop_node(node: Node) -> None:
    """Stop ``node`` within :data:`STOP_TIMEOUT`, so that a node that does not stop
    fails its section instead of hanging the whole benchmark."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await node.stop()
    except TimeoutError:
        raise RuntimeError(f"node {node.name} did not stop within {STOP_TIMEOUT:.0f}s") from None


@contextlib.contextmanager
def etcd_url(extra_args: Sequence[str] = ()) -> Iterator[str]:
    """A one-member etcd (``tests/etcd_server.py``) for one measurement: yields a
    registry URL under a prefix of its own; the member is stopped by PID after.

    :param extra_args: more etcd flags (default none).
    """
    sys.path.insert(0, str(REPO / "tests"))
    from etcd_server import EtcdCluster

    with EtcdCluster(extra_args=extra_args) as cluster:
        yield cluster.url(f"bench{uuid.uuid4().hex[:8]}")


@contextlib.asynccontextmanager
async def etcd_registry_url(extra_args: Sequence[str] = ()) -> AsyncIterator[str]:
    """:func:`etcd_url` from async code (the member starts and stops in a thread)."""
    stack = contextlib.ExitStack()
    try:
        yield await asyncio.to_thread(stack.enter_context, etcd_url(extra_args))
    finally:
        await asyncio.to_thread(stack.close)
