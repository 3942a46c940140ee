"""A handler for node subprocesses that records every successful call durably.

Run a node with ``--handler node_procs.recording:RecordingHandler`` (``tests/``
on ``PYTHONPATH``) and point :data:`RECORD_ENV` at a file.  Each handler
instance (one per node process) appends ``start <pid>``, then one line per
successful call, each flushed and fsynced before the call returns, so the
file shows what the handler saw even across SIGKILL:

- ``apply <key> <mod_revision>``
- ``delete <key> <mod_revision>`` (the version that was deleted)

Failed calls are recorded as ``fail <op> <key> <mod_revision>``.  Faults come
from the file named by ``SCHEMACACHE_FAULTS`` (see :mod:`schemacache.testing`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from schemacache.model import Resource
from schemacache.testing import FaultyHandler

RECORD_ENV = "SCHEMACACHE_TEST_RECORD"
"""Environment variable naming the record file."""


class RecordingHandler(FaultyHandler):
    """Plain (threaded) handler that appends one fsynced line per call.

    :param record_path: the record file (default: ``$SCHEMACACHE_TEST_RECORD``).
    """

    def __init__(self, record_path: str | Path | None = None):
        super().__init__()
        path = record_path if record_path is not None else os.environ[RECORD_ENV]
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # lives as long as the process
        self._write(f"start {os.getpid()}")

    def _write(self, line: str) -> None:
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def _checked(self, op: str, resource: Resource) -> None:
        try:
            self._call(resource.key)
        except Exception:
            self._write(f"fail {op} {resource.key} {resource.mod_revision}")
            raise
        self._write(f"{op} {resource.key} {resource.mod_revision}")

    def apply(self, resource: Resource) -> None:  # type: ignore[override]
        self._checked("apply", resource)

    def delete(self, resource: Resource) -> None:  # type: ignore[override]
        self._checked("delete", resource)
