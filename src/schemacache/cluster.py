"""A local cluster (``schemacache up``) and the scripted fault demo (``schemacache demo``).

Both run the registry API in this process over an embedded SQLite registry and
each node as a ``python -m schemacache node`` subprocess, supervised here:
a node that dies is started again, and shutdown stops every child by PID
(SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import ClientError, RegistryClient
from .manifest import load_resources
from .model import Resource
from .observe.alerts import is_resolved
from .testing import AlertReceiver, write_faults

STOP_GRACE = 10.0
"""Seconds a child gets to exit after SIGTERM before it is killed."""

RESTART_DELAY = 1.0
"""Seconds before a node that died on its own is started again."""

STATUS_REFRESH = 1.0
"""Seconds between two refreshes of the live status table."""

STATUS_PRINT_INTERVAL = 5.0
"""Seconds between two status lines when the output is not a terminal."""

READY_TIMEOUT = 60.0
"""Seconds ``up`` waits for its nodes to be ready before printing the table anyway."""

DEMO_DEADLINE = 25.0
"""Seconds the demo waits for any one step (nodes ready, failure, convergence)."""

DEMO_FAULT_KEY = "measure/sw_metric/service_cpm_minute"
"""The measure whose handler fails on the faulty node in the demo."""

DEMO_NODE_FLAGS = ("--max-attempts", "4", "--backoff-base", "0.2", "--backoff-cap", "1",
                   "--repair-interval", "4", "--repair-backoff-base", "1",
                   "--repair-backoff-cap", "2", "--alert-resend-interval", "60",
                   "--node-ttl", "3")
"""Short retry, repair and lease timings so the demo fits in well under a minute."""

OUTPUT_WIDTH = 160
"""Columns of the output when it is not a terminal."""

EXAMPLES_PACKAGE_DIR = "examples"
"""Folder inside the package holding the example schema ``up`` and ``demo`` apply
(also reachable as ``examples/`` at the top of a source checkout)."""

POLL = 0.1
"""Seconds between two polls of a condition."""

LOG_TAIL_LINES = 20
"""Lines of a failed child's log shown on error."""


def _console() -> Console:
    # rich assumes 80 columns off a terminal, which would cut digests short
    return Console(highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else OUTPUT_WIDTH)


def examples_dir() -> Path | None:
    """The example SkyWalking-like schema installed with the package, or ``None``
    when the installation lacks it."""
    candidate = Path(__file__).resolve().parent / EXAMPLES_PACKAGE_DIR
    if candidate.is_dir() and any(candidate.glob("*.yaml")):
        return candidate
    return None


def sqlite_url(path: Path) -> str:
    """``sqlite:////abs/path`` for a file path."""
    return f"sqlite:///{path.resolve()}"


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
        _make_dir(self.state_dir)
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


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


class _ApiServer:
    """The registry and its HTTP API, served in this process."""

    def __init__(self, registry_url: str, listen: str, node_token: str | None = None):
        from .api.http import UvicornServer
        from .api.server import create_registry_app
        from .registry import open_registry

        self.registry = open_registry(registry_url)
        self.server = UvicornServer(
            create_registry_app(self.registry, node_token=node_token), listen)
        self.url = ""

    async def start(self) -> str:
        self.url = await self.server.start()
        return self.url

    async def stop(self) -> None:
        await self.server.stop()
        await self.registry.close()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def _stop_all(nodes: list[NodeProcess]) -> None:
    for n in nodes:
        n.signal(signal.SIGTERM)
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


# ---------------------------------------------------------------- up


async def run_up(nodes: int = 3, data_dir: Path = Path("./var"),
                 listen: str = "127.0.0.1:8080", console: Console | None = None,
                 registry: str | None = None, node_token: str | None = None) -> int:
    """Run the local cluster until SIGINT/SIGTERM; returns the exit code.

    :param nodes: number of node subprocesses (default 3).
    :param data_dir: ``registry.db`` and ``nodes/node-i/`` live here (default ``./var``);
        an existing one is reused.
    :param listen: ``host:port`` of the registry API (default ``127.0.0.1:8080``).
    :param console: where to print (default: stdout).
    :param registry: registry URL the API and the nodes share (default: the
        embedded SQLite file ``data_dir/registry.db``).
    :param node_token: the nodes' admin token (default ``None``: open admin APIs);
        handed to each node through its environment, and to the API for
        ``GET /v1/cluster``.
    """
    from .api.http import is_loopback, parse_listen
    from .node.config import NODE_TOKEN_ENV

    out = console or _console()
    if not is_loopback(parse_listen(listen)[0]):
        out.print("error: up serves the API without a token; bind a loopback address")
        return 2
    _make_dir(data_dir)
    registry_url = registry or sqlite_url(data_dir / "registry.db")
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    api = _ApiServer(registry_url, listen, node_token)
    children: list[NodeProcess] = []
    try:
        url = await api.start()
        out.print(f"schemacache registry API listening on {url} (registry {registry_url})")
        await _seed_examples(api, url, out)
        nodes_dir = data_dir / "nodes"
        for i in range(1, nodes + 1):
            name = f"node-{i}"
            child = NodeProcess(name, registry_url, nodes_dir / name, nodes_dir / f"{name}.log",
                                env={NODE_TOKEN_ENV: node_token} if node_token else None)
            await child.start()
            out.print(f"{name} started (pid {child.pid}, log {child.log_path})")
            children.append(child)
        out.print(f"cluster up: {nodes} nodes; console at {url}/; try "
                  f"`schemacache status --server {url}`; Ctrl-C stops it")
        sys.stdout.flush()
        supervisor = asyncio.create_task(_supervise(children, stop, out))
        try:
            await _show_status(url, stop, out)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
    finally:
        _remove_signal_handlers()
        out.print("stopping: nodes, then the API")
        await _stop_all(children)
        await api.stop()
        out.print("stopped")
    return 0


async def _seed_examples(api: _ApiServer, url: str, out: Console) -> None:
    if await api.registry.revision() != 0:
        items, revision = await api.registry.list()
        out.print(f"reusing registry: {len(items)} resources at revision {revision}")
        return
    source = examples_dir()
    if source is None:
        out.print("no examples/ directory found; starting with an empty registry")
        return
    resources = load_resources(source)
    async with RegistryClient(url) as client:
        result = await client.apply(resources)
    out.print(f"applied {len(resources)} example resources from {source} "
              f"(revision {result['revision']})")


async def _supervise(children: list[NodeProcess], stop: asyncio.Event, out: Console) -> None:
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


async def _show_status(url: str, stop: asyncio.Event, out: Console) -> None:
    from .cli import render_status

    async with RegistryClient(url, timeout=5.0) as client:
        if out.is_terminal:
            with Live(Table(), console=out, refresh_per_second=2) as live:
                while not stop.is_set():
                    with contextlib.suppress(ClientError):
                        live.update(render_status(await client.cluster()))
                    await _sleep_or_stop(stop, STATUS_REFRESH)
            return
        while not stop.is_set():
            with contextlib.suppress(ClientError):
                out.print(_status_line(await client.cluster()))
                sys.stdout.flush()
            await _sleep_or_stop(stop, STATUS_PRINT_INTERVAL)


def _status_line(cluster: dict[str, Any]) -> str:
    parts = []
    for entry in cluster.get("nodes", []):
        st = entry.get("status") or {}
        same = (st.get("cache") or {}).get("digest") == cluster["digest"]
        parts.append(f"{entry['name']}={st.get('state', 'unreachable')}"
                     f"@{st.get('applied_revision', '-')}{'' if same else '*'}")
    return (f"status: revision {cluster['revision']} digest {cluster['digest'][:12]} | "
            + (" ".join(parts) or "no live nodes"))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# ---------------------------------------------------------------- demo


DEMO_ALERT = "SchemaEventRetriesExhausted"


def _print_alert(out: Console) -> Callable[[dict[str, Any]], None]:
    def show(alert: dict[str, Any]) -> None:
        labels = alert.get("labels", {})
        state = "RESOLVED" if is_resolved(alert) else "FIRING"
        out.print(f"  [bold magenta]webhook ← {state} {labels.get('alertname')}"
                  f"[/bold magenta] node={labels.get('node')} key={labels.get('key')}"
                  f" {alert.get('annotations', {}).get('last_error', '')}")
    return show


class _LogEcho:
    """Echo one node's log lines about one key, with the gap since the previous one
    (so the backoff between attempts is visible)."""

    def __init__(self, out: Console, node: str, key: str):
        self.out = out
        self.node = node
        self.key = key
        self.last: datetime | None = None

    def __call__(self, name: str, line: str) -> None:
        if name != self.node or self.key not in line or "schemacache.testing" in line:
            return  # the handler's own line repeats the node's "attempt failed" one
        stamp, text = _split_log_line(line)
        gap = ""
        if stamp is not None:
            if self.last is not None:
                gap = f"+{(stamp - self.last).total_seconds():.3f}s "
            self.last = stamp
        self.out.print(f"  [dim]{name}: {gap}{text.strip()[:150]}[/dim]", markup=True)


def _split_log_line(line: str) -> tuple[datetime | None, str]:
    """``(timestamp, rest)`` of a ``YYYY-MM-DD HH:MM:SS,mmm LEVEL logger: message`` line."""
    head, text = line[:23], line[24:]
    try:
        return datetime.strptime(head, "%Y-%m-%d %H:%M:%S,%f"), text
    except ValueError:
        return None, line


class DemoFailed(Exception):
    """A step of the demo did not happen in time."""


async def _until(what: str, check: Callable[[], Awaitable[Any]],
                 deadline: float = DEMO_DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        with contextlib.suppress(ClientError):
            value = await check()
            if value:
                return value
        if time.monotonic() > end:
            raise DemoFailed(f"timed out after {deadline:g}s waiting for {what}")
        await asyncio.sleep(POLL)


async def run_demo(data_dir: Path | None = None, console: Console | None = None) -> int:
    """The scripted fault scenario; returns 0 when every node converged.

    :param data_dir: where to keep the data (default: a temporary directory, removed).
    :param console: where to print (default: stdout).
    """
    out = console or _console()
    if data_dir is not None:
        _make_dir(data_dir)
        return await _demo(data_dir, out)
    with tempfile.TemporaryDirectory(prefix="schemacache-demo-") as tmp:
        return await _demo(Path(tmp), out)


async def _demo(data_dir: Path, out: Console) -> int:
    started = time.monotonic()
    registry_url = sqlite_url(data_dir / "registry.db")
    api = _ApiServer(registry_url, "127.0.0.1:0")
    receiver = AlertReceiver(on_alert=_print_alert(out))
    nodes: list[NodeProcess] = []
    try:
        url = await api.start()
        hook = await receiver.start()
        out.print(f"[bold]1. registry API on {url}, alert webhook on {hook}[/bold]")


        faults = [data_dir / f"faults-node-{i}.json" for i in (1, 2, 3)]
        for f in faults:
            write_faults(f)

        show = _LogEcho(out, "node-2", DEMO_FAULT_KEY)

        for i in (1, 2, 3):
            node = NodeProcess(
                f"node-{i}", registry_url, data_dir / "nodes" / f"node-{i}",
                data_dir / "nodes" / f"node-{i}.log",
                extra=(*DEMO_NODE_FLAGS, "--handler", "schemacache.testing:FaultyHandler",
                       "--alert-webhook", hook),
                env={"SCHEMACACHE_FAULTS": str(faults[i - 1])}, on_line=show)
            await node.start()
            nodes.append(node)
        async with RegistryClient(url, timeout=10.0) as client:
            code = await _demo_script(client, nodes, faults, receiver, out)
        out.print(f"demo finished in {time.monotonic() - started:.1f}s")
        return code
    except DemoFailed as exc:
        out.print(f"[red]demo failed: {exc}[/red]")
        for n in nodes:
            out.print(f"--- last lines of {n.name} ---\n{n.log_tail()}")
        return 1
    finally:
        await _stop_all(nodes)
        await receiver.stop()
        await api.stop()


async def _cluster_nodes(client: RegistryClient) -> dict[str, dict[str, Any]]:
    cluster = await client.cluster()
    return {e["name"]: (e.get("status") or {}) for e in cluster["nodes"]}


async def _all_ready(client: RegistryClient, names: list[str], revision: int) -> bool:
    status = await _cluster_nodes(client)
    return all(status.get(n, {}).get("state") == "ready"
               and int(status[n].get("applied_revision") or 0) >= revision for n in names)


def _changed(resource: Resource, field: str) -> Resource:
    """A copy of a measure with one more INT field (a schema update)."""
    spec = json.loads(json.dumps(resource.spec))
    spec["fields"].append({"name": field, "field_type": "INT"})
    return Resource.parse({"kind": resource.kind, "metadata": {
        "group": resource.group, "name": resource.name}, "spec": spec})


def _scratch(group: str, i: int) -> Resource:
    return Resource.parse({
        "kind": "measure", "metadata": {"group": group, "name": f"demo_{i:03d}"},
        "spec": {"tag_families": [{"name": "default",
                                   "tags": [{"name": "entity_id", "type": "STRING"}]}],
                 "fields": [{"name": "value", "field_type": "INT"}],
                 "entity": {"tag_names": ["entity_id"]}}})


async def _demo_script(client: RegistryClient, nodes: list[NodeProcess], faults: list[Path],
                       receiver: AlertReceiver, out: Console) -> int:


    names = [n.name for n in nodes]
    source = examples_dir()
    if source is None:
        raise DemoFailed("no examples/ directory to apply")
    resources = load_resources(source)
    result = await client.apply(resources)
    out.print(f"[bold]2. applied {len(resources)} example resources "
              f"(revision {result['revision']}); waiting for 3 nodes[/bold]")
    await _until("3 ready nodes", lambda: _all_ready(client, names, int(result["revision"])))
    out.print("  all 3 nodes ready and caught up")

    faulty = next(r for r in resources if r.key == DEMO_FAULT_KEY)
    write_faults(faults[1], fail={DEMO_FAULT_KEY: "injected fault: storage unavailable"})
    out.print(f"[bold]3. fault injected in node-2's handler for {DEMO_FAULT_KEY}; "
              "updating it[/bold]")
    out.print("  node-2 retries with exponential backoff and full jitter "
              "(max 4 attempts, base 0.2s, cap 1s)")
    update = await client.put(_changed(faulty, "demo_extra"))
    out.print(f"  {DEMO_FAULT_KEY} updated at revision {update['revision']}")

    out.print("[bold]4. meanwhile, 10 other changes flow to every node[/bold]")
    group = "sw_metric"
    revision = 0
    for i in range(1, 11):
        revision = int((await client.put(_scratch(group, i)))["revision"])

    async def failed() -> Any:
        status = (await _cluster_nodes(client)).get("node-2", {})
        return [f for f in status.get("failures") or [] if f.get("key") == DEMO_FAULT_KEY]

    record = (await _until("node-2 to exhaust its retries", failed))[0]
    out.print(f"  retries exhausted: {record.get('key')} revision {record.get('revision')} "
              f"after {record.get('attempts')} attempts: {record.get('last_error')}")
    await _until("the SchemaEventRetriesExhausted alert",
                 _const(lambda: bool(receiver.matching(DEMO_ALERT, resolved=False))))

    async def others_applied() -> bool:
        status = await _cluster_nodes(client)
        return all(int(status.get(n, {}).get("applied_revision") or 0) >= revision
                   for n in names)

    await _until("the 10 other writes to reach every node", others_applied)
    status = await _cluster_nodes(client)
    for n in names:
        applied = [f"demo_{i:03d}" for i in range(1, 11)]
        out.print(f"  {n}: state {status[n].get('state')}, applied revision "
                  f"{status[n].get('applied_revision')} (all of {applied[0]}..{applied[-1]}), "
                  f"{len(status[n].get('failures') or [])} failure(s)")

    out.print("[bold]5. fault cleared; repair converges node-2[/bold]")
    write_faults(faults[1])

    async def repaired() -> bool:
        st = (await _cluster_nodes(client)).get("node-2", {})
        return not (st.get("failures") or []) and (st.get("cache") or {}).get(
            "digest") == (await client.digest())["digest"]

    await _until("node-2 to repair the key", repaired)
    out.print("  node-2 repaired; failure record gone")
    await _until("the alert to resolve",
                 _const(lambda: bool(receiver.matching(DEMO_ALERT, resolved=True))))

    out.print("[bold]6. SIGKILL node-3 in the middle of a stream of writes, then restart it[/bold]")
    victim = nodes[2]
    for i in range(11, 61):  # demo_001..010 exist already
        await client.put(_scratch(group, i))
        if i == 30:
            await victim.kill()
            out.print(f"  node-3 killed (SIGKILL) after write {i}")
        if i == 45:
            await victim.start()
            out.print(f"  node-3 restarted (pid {victim.pid}) after write {i}")
    final = await client.revision()
    await _until("every node to converge", lambda: _all_ready(client, names, final))

    out.print("[bold]7. digests[/bold]")
    registry_digest = (await client.digest())["digest"]
    status = await _cluster_nodes(client)
    table = Table(header_style="bold")
    for column in ("WHERE", "DIGEST", "MATCH"):
        table.add_column(column)
    table.add_row("registry", registry_digest, "")
    ok = True
    for n in names:
        node_digest = (status.get(n, {}).get("cache") or {}).get("digest", "")
        same = node_digest == registry_digest
        ok = ok and same
        table.add_row(n, node_digest, "[green]yes[/green]" if same else "[red]NO[/red]")
    out.print(table)
    out.print("[green]every node converged[/green]" if ok else "[red]digests differ[/red]")
    return 0 if ok else 1


def _const(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check
