"""The handler node subprocesses run under the chaos harness (``bench/chaos.py``).

Loaded as ``bench.chaos_handler:ChaosHandler`` (the repository root on
``PYTHONPATH``).  Every call appends one line to the record file named by
:data:`RECORD_ENV`, flushed and fsynced before the call returns, so a SIGKILL
loses no record of a call the node saw succeed:

- ``start <pid> <time>`` when a handler process starts;
- ``apply <key> <mod_revision> <time>`` and ``delete <key> <mod_revision> <time>``
  (a delete carries the version deleted) after a successful call;
- ``fail <op> <key> <mod_revision> <time>`` for a failed one.

``<time>`` is the wall clock (``time.time()``), so the harness can place each
call before or after a registry restore.  A call fails with probability
:data:`FAIL_RATE_ENV` (default :data:`DEFAULT_FAIL_RATE`) as long as the file
named by :data:`CALM_ENV` does not exist; the harness creates it when the
nemesis stops, so that every node can converge.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from schemacache import Resource, TemporaryError

RECORD_ENV = "SCHEMACACHE_CHAOS_RECORD"
"""Environment variable naming the record file (required)."""
CALM_ENV = "SCHEMACACHE_CHAOS_CALM"
"""Environment variable naming the file whose existence stops injected failures."""
FAIL_RATE_ENV = "SCHEMACACHE_CHAOS_FAIL_RATE"
"""Environment variable: share of calls that fail (default :data:`DEFAULT_FAIL_RATE`)."""
DEFAULT_FAIL_RATE = 0.05


class ChaosHandler:
    """Plain (threaded) handler: fails at random, records every call durably.

    :param record_path: record file (default: ``$SCHEMACACHE_CHAOS_RECORD``).
    :param calm_path: once this file exists no call fails (default: ``$SCHEMACACHE_CHAOS_CALM``;
        none = fail at random forever).
    :param fail_rate: share of calls that fail (default: ``$SCHEMACACHE_CHAOS_FAIL_RATE``
        or :data:`DEFAULT_FAIL_RATE`).
    """

    def __init__(self, record_path: str | Path | None = None,
                 calm_path: str | Path | None = None, fail_rate: float | None = None):
        path = record_path if record_path is not None else os.environ[RECORD_ENV]
        calm = calm_path if calm_path is not None else os.environ.get(CALM_ENV)
        self._calm = Path(calm) if calm else None
        self._fail_rate = (fail_rate if fail_rate is not None
                           else float(os.environ.get(FAIL_RATE_ENV, DEFAULT_FAIL_RATE)))
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # lives as long as the process
        self._write(f"start {os.getpid()}")

    def _write(self, line: str) -> None:
        with self._lock:
            self._file.write(f"{line} {time.time():.6f}\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def _failing(self) -> bool:
        if self._calm is not None and self._calm.exists():
            return False
        return random.random() < self._fail_rate

    def _call(self, op: str, resource: Resource) -> None:
        if self._failing():
            self._write(f"fail {op} {resource.key} {resource.mod_revision}")
            raise TemporaryError(f"injected chaos failure of {op} {resource.key}")
        self._write(f"{op} {resource.key} {resource.mod_revision}")

    def apply(self, resource: Resource) -> None:
        self._call("apply", resource)

    def delete(self, resource: Resource) -> None:
        self._call("delete", resource)
