"""The scripted fault demo (``schemacache demo``): a poisoned event on one node,
bounded retries, an alert, repair, and every node converged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .client import ClientError, RegistryClient
from .cluster import ApiServer, examples_dir, sqlite_url
from .manifest import load_resources
from .model import Resource
from .observe.alerts import is_resolved
from .supervisor import POLL, NodeProcess, make_dir, stop_all
from .testing import AlertReceiver, write_faults
from .views import make_console

DEMO_DEADLINE = 25.0
"""Seconds the demo waits for any one step (nodes ready, failure, convergence)."""

DEMO_FAULT_KEY = "measure/sw_metric/service_cpm_minute"
"""The measure whose handler fails on the faulty node in the demo."""

DEMO_NODE_FLAGS = ("--max-attempts", "4", "--backoff-base", "0.2", "--backoff-cap", "1",
                   "--repair-interval", "4", "--repair-backoff-base", "1",
                   "--repair-backoff-cap", "2", "--alert-resend-interval", "60",
                   "--node-ttl", "3")
"""Short retry, repair and lease timings so the demo fits in well under a minute."""

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
    out = console or make_console()
    if data_dir is not None:
        make_dir(data_dir)
        return await _demo(data_dir, out)
    with tempfile.TemporaryDirectory(prefix="schemacache-demo-") as tmp:
        return await _demo(Path(tmp), out)


async def _demo(data_dir: Path, out: Console) -> int:
    started = time.monotonic()
    registry_url = sqlite_url(data_dir / "registry.db")
    api = ApiServer(registry_url, "127.0.0.1:0")
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
        await stop_all(nodes)
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
