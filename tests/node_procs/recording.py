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

With :data:`KILL_ENV` naming a file that holds ``<op> <key> <delay_ms>`` (read
at each call, so a test arms it while the node runs), the handler SIGKILLs its
own process ``delay_ms`` after it recorded a successful call of ``op`` on
``key`` (0: at once, before the call returns to the node).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from schemacache.model import Resource
from schemacache.testing import FaultyHandler

RECORD_ENV = "SCHEMACACHE_TEST_RECORD"
"""Environment variable naming the record file."""
KILL_ENV = "SCHEMACACHE_TEST_KILL_FILE"
"""Environment variable naming the kill trigger file (``<op> <key> <delay_ms>``)."""
DELAY_ENV = "SCHEMACACHE_TEST_CALL_DELAY_MS"
"""Environment variable: milliseconds every handler call takes (default 0)."""


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


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
        self._kill_file = os.environ.get(KILL_ENV)
        self._delay = float(os.environ.get(DELAY_ENV, "0")) / 1000

    def _write(self, line: str) -> None:
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def _checked(self, op: str, resource: Resource) -> None:
        if self._delay:
            time.sleep(self._delay)  # a slow handler (this runs on a worker thread)
        try:
            self._call(resource.key)
        except Exception:
            self._write(f"fail {op} {resource.key} {resource.mod_revision}")
            raise
        self._write(f"{op} {resource.key} {resource.mod_revision}")
        if self._kill_file:
            self._maybe_die(op, resource.key)

    def _maybe_die(self, op: str, key: str) -> None:
        try:
            want_op, want_key, delay_ms = Path(self._kill_file).read_text().split()
        except (OSError, ValueError):
            return
        if (want_op, want_key) != (op, key):
            return
        delay = float(delay_ms) / 1000
        if delay <= 0:
            _kill_self()
        threading.Timer(delay, _kill_self).start()

    def apply(self, resource: Resource) -> None:  # type: ignore[override]
        self._checked("apply", resource)

    def delete(self, resource: Resource) -> None:  # type: ignore[override]
        self._checked("delete", resource)
