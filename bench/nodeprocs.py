"""Node subprocesses (``python -m schemacache.node``) for the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10.0
"""Seconds a node gets to stop after SIGTERM before it is killed."""


class NodeProcess:
    """One node subprocess, logging to ``workdir/<name>.log``.

    :param name: node name.
    :param registry_url: registry URL.
    :param workdir: directory of the node's state and log.
    :param handler: ``module:attribute`` (default ``None``: no handler).
    :param env: extra environment variables.
    :param args: extra command-line flags.
    """

    def __init__(self, name: str, registry_url: str, workdir: Path, *,
                 handler: str | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        cmd = [sys.executable, "-m", "schemacache.node", "--registry", registry_url,
               "--name", name, "--state-dir", str(workdir / name), "--listen", "127.0.0.1:0",
               "--repair-interval", "0", "--log-level", "WARNING", *args]
        if handler is not None:
            cmd += ["--handler", handler]
        full_env = dict(os.environ)
        # The handler module lives in this repository's bench/ package.
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=str(workdir))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, size: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`; idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
