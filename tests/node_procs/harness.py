"""Test-side harness of the node tests: node subprocesses, their record files,
their durable state, and a webhook receiver.

Every subprocess runs in its own session and is stopped by PID; nothing here
waits with a bare sleep: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from schemacache import Resource

from .recording import RECORD_ENV

TESTS_DIR = Path(__file__).resolve().parent.parent
NODE_MODULE = "schemacache.node"
"""``python -m`` target that runs one node."""
RECORDING_HANDLER = "node_procs.recording:RecordingHandler"
START_TIMEOUT = 60.0
"""Seconds a node subprocess may take to print its admin URL (2 busy cores)."""
POLL_INTERVAL = 0.02
HTTP_TIMEOUT = 10.0
_URL_RE = re.compile(r"\badmin (http://127\.0\.0\.1:\d+)")
_OUTPUT_KEPT = 400


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float,  # noqa: ASYNC109
                     what: str, interval: float = POLL_INTERVAL) -> Any:
    """Poll ``check`` until it returns something truthy; raise ``AssertionError``
    naming ``what`` after ``timeout`` seconds.

    :param interval: seconds between polls (default :data:`POLL_INTERVAL`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


class NodeProc:
    """One ``python -m schemacache.node`` subprocess, restartable with the same
    state directory.

    :param registry: registry URL.
    :param state_dir: the node's state directory.
    :param name: node name.
    :param handler: ``module:attribute`` of the handler (default: the recording one).
    :param record: record file of the recording handler (default: none).
    :param env: extra environment variables.
    :param extra: more command-line flags.
    """

    def __init__(self, registry: str, state_dir: Path, name: str, *,
                 handler: str | None = RECORDING_HANDLER, record: Path | None = None,
                 env: dict[str, str] | None = None, extra: Sequence[str] = ()):
        self.registry = registry
        self.state_dir = state_dir
        self.name = name
        self.handler = handler
        self.record = record
        self.env = dict(env or {})
        self.extra = list(extra)
        self.proc: asyncio.subprocess.Process | None = None
        self.url: str | None = None
        self.output: list[str] = []
        self.starts = 0
        self._url_found: asyncio.Event = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def args(self) -> list[str]:
        args = [sys.executable, "-m", NODE_MODULE, "--registry", self.registry,
                "--state-dir", str(self.state_dir), "--name", self.name,
                "--listen", "127.0.0.1:0"]
        if self.handler is not None:
            args += ["--handler", self.handler]
        return args + self.extra

    async def start(self) -> None:
        """Spawn the process (does not wait for it; see :meth:`wait_url`)."""
        assert self.proc is None or self.proc.returncode is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMACACHE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
        if self.record is not None:
            env[RECORD_ENV] = str(self.record)
        env.update(self.env)
        self.url = None
        self._url_found = asyncio.Event()
        self.output.append(f"=== start #{self.starts + 1}")
        self.proc = await asyncio.create_subprocess_exec(
            *self.args(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
        self.starts += 1
        self._reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            if len(self.output) > 4 * _OUTPUT_KEPT:
                del self.output[:-_OUTPUT_KEPT]
            if self.url is None:
                m = _URL_RE.search(line)
                if m:
                    self.url = m.group(1)
                    self._url_found.set()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output[-lines:])

    async def wait_url(self, timeout: float = START_TIMEOUT) -> str:  # noqa: ASYNC109
        """Wait for the admin URL line of the current process."""
        assert self.proc is not None
        waiter = asyncio.ensure_future(self._url_found.wait())
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({waiter, exited}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            exited.cancel()
        if self.url is None:
            state = "exited" if self.proc.returncode is not None else "still starting"
            raise AssertionError(f"node {self.name} {state} without an admin URL:\n"
                                 f"{self.tail()}")
        return self.url

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        await self._signal_and_wait(signal.SIGKILL, 10.0)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (default 10)."""
        if not self.running:
            await self._reap()
            return
        try:
            await self._signal_and_wait(signal.SIGTERM, grace)
        except TimeoutError:
            await self.kill()

    async def _signal_and_wait(self, sig: int, timeout: float) -> None:  # noqa: ASYNC109
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            await asyncio.wait_for(proc.wait(), timeout)
        await self._reap()

    async def _reap(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
            self._reader = None

    # --- admin HTTP -------------------------------------------------------------

    async def get(self, path: str) -> Any:
        assert self.url is not None
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            resp = await client.get(self.url + path)
            resp.raise_for_status()
            return resp.json()

    async def post(self, path: str) -> Any:
        assert self.url is not None
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            resp = await client.post(self.url + path)
            resp.raise_for_status()
            return resp.json()


# ---------------------------------------------------------------- durable state


@dataclass
class DurableState:
    """What a node's ``state.db`` held (read while the node is down).

    :param applied: key → applied revision.
    :param desired: key → (revision, deleted).
    :param failures: key → failure row (``revision``, ``attempts``, ``first_failed``).
    :param received_revision: the revision the node resumes watching after.
    """

    received_revision: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    desired: dict[str, tuple[int, bool]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_state(state_dir: Path) -> DurableState | None:
    """Read ``state_dir/state.db``; ``None`` when there is no (complete) state yet."""
    path = state_dir / "state.db"
    if not path.exists():
        return None
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"applied", "desired", "failures"} <= tables:
            return None
        state = DurableState()
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        state.received_revision = int(meta.get("received_revision", "0"))
        state.applied = {k: int(r) for k, r in conn.execute("SELECT key, revision FROM applied")}
        state.desired = {k: (int(r), bool(d)) for k, r, d in conn.execute(
            "SELECT key, revision, deleted FROM desired")}
        state.failures = {k: {"revision": int(r), "attempts": int(a), "first_failed": float(f)}
                          for k, r, a, f in conn.execute(
                              "SELECT key, revision, attempts, first_failed FROM failures")}
        return state
    finally:
        conn.close()


async def applied_durably(node: NodeProc, state_dir: Path, key: str, revision: int) -> bool:
    """Whether ``node`` applied ``key`` at ``revision`` and ``state.db`` holds
    what makes a restart hand that version again: its applied row, or its
    desired row at that revision (an applied version equal to its durable
    desired row writes no applied row of its own)."""
    state = read_state(state_dir)
    if state is None or (state.applied.get(key) != revision
                         and state.desired.get(key) != (revision, False)):
        return False
    cache = await node.get("/v1/cache")
    return any(Resource.from_stored(r).key == key and r["metadata"]["mod_revision"] == revision
               for r in cache["resources"])


# ---------------------------------------------------------------- record files


@dataclass
class Call:
    """One line of a record file: ``op`` ∈ apply|delete|fail-apply|fail-delete."""

    op: str
    key: str
    revision: int


def read_record(path: Path) -> list[list[Call]]:
    """Split a record file into lifetimes (one per ``start`` line).

    A SIGKILL can cut the last line of a lifetime short; such a fragment is
    dropped, anything else malformed fails the test.
    """
    lifetimes: list[list[Call]] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        parts = line.split()
        last_of_lifetime = i + 1 >= len(lines) or lines[i + 1].startswith("start ")
        if len(parts) == 2 and parts[0] == "start":
            lifetimes.append([])
        elif len(parts) == 3 and parts[0] in ("apply", "delete") and parts[2].isdigit():
            lifetimes[-1].append(Call(parts[0], parts[1], int(parts[2])))
        elif len(parts) == 4 and parts[0] == "fail" and parts[3].isdigit():
            lifetimes[-1].append(Call(f"fail-{parts[1]}", parts[2], int(parts[3])))
        elif line and not last_of_lifetime:
            raise AssertionError(f"malformed record line {i + 1}: {line!r}")
    return lifetimes


def backwards_calls(lifetimes: list[list[Call]],
                    delete_end: Callable[[str, int], int | None]) -> list[str]:
    """Where a handler's record goes back in time (DESIGN.md invariant 2), across
    every lifetime: per key, an apply never hands a version older than one
    handed before (a repeat is allowed: at-least-once), and after a delete the
    key only comes back with a version newer than the delete's revision.

    :param delete_end: ``(key, version)`` → revision of the delete that ended the
        life holding that version (``None`` if it was never deleted).
    :returns: one text per problem (empty when the record never went back).
    """
    problems: list[str] = []
    floor: dict[str, tuple[int, bool, int]] = {}  # key -> (revision, deleted, lifetime)
    for n, calls in enumerate(lifetimes):
        for call in calls:
            if call.op.startswith("fail"):
                continue
            prev = floor.get(call.key)
            v = call.revision
            if call.op == "apply":
                if prev is not None and (v < prev[0] or (prev[1] and v <= prev[0])):
                    what = "delete at" if prev[1] else "apply of"
                    problems.append(f"life {n}: apply {call.key} {v} after the {what} "
                                    f"{prev[0]} (life {prev[2]})")
                floor[call.key] = (v, False, n)
            else:
                if prev is not None and not prev[1] and v < prev[0]:
                    problems.append(f"life {n}: delete {call.key} hands {v} after the apply "
                                    f"of {prev[0]} (life {prev[2]})")
                ended = delete_end(call.key, v)
                if ended is None:
                    problems.append(f"life {n}: delete {call.key} {v}, but that version was "
                                    "never deleted")
                    continue
                floor[call.key] = (max(ended, prev[0] if prev else 0), True, n)
    return problems


# The webhook receiver is schemacache.testing.AlertReceiver (re-exported here).


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)[:4000]
