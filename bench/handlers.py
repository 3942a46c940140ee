"""Handlers the benchmarks give to nodes.

``NoopHandler`` does nothing (the cost measured is the node's own).
``RecordingHandler`` is loaded by node subprocesses (``bench.handlers:RecordingHandler``)
and appends, per apply, the key and the propagation delay — now minus the
resource's commit time ``metadata.updated_at`` — to the file named by the
environment variable :data:`LATENCY_FILE_ENV`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TextIO

from schemacache import Resource

LATENCY_FILE_ENV = "SCHEMACACHE_BENCH_LATENCY_FILE"
"""Environment variable naming the file a :class:`RecordingHandler` appends to."""


class NoopHandler:
    """Accepts every change at once (async, so no thread hop per call)."""

    async def apply(self, resource: Resource) -> None:
        return None

    async def delete(self, resource: Resource) -> None:
        return None


class RecordingHandler:
    """Records ``key<TAB>seconds`` per apply, one line each, flushed per line.

    :param path: file to append to (default: the value of :data:`LATENCY_FILE_ENV`).
    """

    def __init__(self, path: str | None = None):
        target = path or os.environ.get(LATENCY_FILE_ENV)
        if not target:
            raise RuntimeError(f"set {LATENCY_FILE_ENV} to the file latencies go to")
        # Line buffering: the benchmark reads the file while the node runs.
        self._out: TextIO = open(target, "a", buffering=1)

    async def apply(self, resource: Resource) -> None:
        committed = resource.metadata.updated_at
        if committed is None:
            return
        delay = (datetime.now(UTC) - committed).total_seconds()
        self._out.write(f"{resource.key}\t{delay:.6f}\n")

    async def delete(self, resource: Resource) -> None:
        return None


def read_latencies(path: str) -> dict[str, float]:
    """The first recorded delay per key in a :class:`RecordingHandler` file."""
    found: dict[str, float] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a line still being written
                key, sep, value = line.rstrip("\n").partition("\t")
                if sep and key not in found:
                    found[key] = float(value)
    except FileNotFoundError:
        pass
    return found
