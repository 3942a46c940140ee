"""Node subprocesses of a local cluster, supervised by PID.

A node that dies while the cluster is up is started again after
:data:`RESTART_DELAY` seconds; shutdown stops every child by PID (SIGTERM,
then SIGKILL after :data:`STOP_GRACE` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from rich.console import Console

STOP_GRACE = 10.0
"""Seconds a child gets to exit after SIGTERM before it is killed."""

RESTART_DELAY = 1.0
"""Seconds before a node that died on its own is started again."""

POLL = 0.1
"""Seconds between two polls of a condition."""

LOG_TAIL_LINES = 20
"""Lines of a failed child's log shown on error."""


class NodeProcess:
    """One ``schemacache node`` subprocess.

    :param name: node name (``node-1`` …).
    :param registry: registry URL.
    :param state_dir: the node's state directory.
    :param log_path: file the node's output is appended to.
    :param extra: more ``node`` flags.
    :param env: extra environment variables.
    :param on_line: called with each output line (default: none).
    """

    def __init__(self, name: str, registry: str, state_dir: Path, log_path: Path,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 on_line: Callable[[str, str], None] | None = None):
        self.name = name
        self.registry = registry
        self.state_dir = state_dir
        self.log_path = log_path
        self.extra = extra
        self.env = env or {}
        self.on_line = on_line
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        make_dir(self.state_dir)
        args = [sys.executable, "-m", "schemacache", "node", "--registry", self.registry,
                "--name", self.name, "--state-dir", str(self.state_dir),
                "--listen", "127.0.0.1:0", *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=env,
            # its own process group: a terminal's Ctrl-C reaches the supervisor only,
            # which then stops the nodes in order
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._pump(self.proc))

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with _open_log(self.log_path) as log:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                if self.on_line is not None:
                    self.on_line(self.name, line)

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.wait()

    async def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            await self.wait()

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])


def _open_log(path: Path) -> IO[str]:
    # small appends from one task; not worth a thread per line
    return open(path, "a", encoding="utf-8")


def make_dir(path: Path) -> None:
    """Create ``path`` and its parents; an existing one is kept."""
    path.mkdir(parents=True, exist_ok=True)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def remove_signal_handlers() -> None:
    """Undo :func:`install_signal_handlers`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def stop_all(nodes: list[NodeProcess]) -> None:
    """SIGTERM every node at once, then wait for each (SIGKILL after :data:`STOP_GRACE`)."""
    for n in nodes:
        n.signal(signal.SIGTERM)
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def supervise(children: list[NodeProcess], stop: asyncio.Event, out: Console) -> None:
    """Start again any node that exits while the cluster is up."""
    while not stop.is_set():
        for child in children:
            if not child.running and not stop.is_set():
                code = child.proc.returncode if child.proc else None
                out.print(f"{child.name} exited with {code}; restarting in {RESTART_DELAY:g}s")
                await asyncio.sleep(RESTART_DELAY)
                if stop.is_set():
                    return
                child.restarts += 1
                await child.start()
                out.print(f"{child.name} restarted (pid {child.pid})")
        await asyncio.sleep(POLL * 5)
