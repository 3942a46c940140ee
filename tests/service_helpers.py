"""Subprocess helpers for the service tests: ``schemacache serve``/``node``/``up`` and the CLI.

Every process is started in its own session and stopped by PID (SIGTERM, then
SIGKILL after a grace period), so a test leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STOP_GRACE = 10.0
"""Seconds a process gets to exit after SIGTERM before SIGKILL."""

START_TIMEOUT = 30.0
"""Seconds to wait for a server to print its URL."""

CLI_TIMEOUT = 120.0
"""Seconds one CLI command may take."""

URL_RE = re.compile(r"(https?://127\.0\.0\.1:\d+)")


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMACACHE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


class Proc:
    """A background ``python -m schemacache …`` whose output is collected by a thread.

    :param args: the arguments after ``schemacache``.
    :param cwd: working directory.
    :param env: extra environment variables.
    """

    def __init__(self, args: Sequence[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.args = list(args)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "schemacache", *args], cwd=cwd, env=cli_env(env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = START_TIMEOUT,
                 what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.popen.poll() is not None:
                time.sleep(0.1)  # let the reader catch the last lines
                raise AssertionError(f"{self.args[0]} exited with {self.popen.returncode} "
                                     f"before {what}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output}")

    def wait_url(self, marker: str = "listening on") -> str:
        def found() -> str | None:
            for line in list(self.lines):
                if marker in line:
                    m = URL_RE.search(line)
                    if m:
                        return m.group(1)
            return None

        return str(self.wait_for(found, what=f"a line with {marker!r}"))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> int:
        """Signal the process, wait ``grace`` seconds, then SIGKILL it; returns its exit code."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._reader.join(5)
        return int(self.popen.returncode)


def run_cli(*args: str, server: str | None = None, input: str | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m schemacache ARGS`` to completion."""
    extra = dict(env or {})
    if server is not None:
        extra["SCHEMACACHE_SERVER"] = server
    return subprocess.run([sys.executable, "-m", "schemacache", *args], input=input,
                          capture_output=True, text=True, env=cli_env(extra), cwd=cwd,
                          timeout=timeout, check=False)


def cli_json(*args: str, server: str) -> Any:
    result = run_cli(*args, "-o", "json", server=server)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    """Every descendant PID of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().split(") ", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found
