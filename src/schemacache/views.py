"""What ``status`` and ``up`` show: the cluster table, the one-line status, the live view."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import ClientError, RegistryClient

STATUS_REFRESH = 1.0
"""Seconds between two refreshes of the live status table."""

STATUS_PRINT_INTERVAL = 5.0
"""Seconds between two status lines when the output is not a terminal."""

OUTPUT_WIDTH = 160
"""Columns of the output when it is not a terminal."""


def make_console() -> Console:
    """A console for ``up`` and ``demo`` output (:data:`OUTPUT_WIDTH` columns off a terminal)."""
    # rich assumes 80 columns off a terminal, which would cut digests short
    return Console(highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else OUTPUT_WIDTH)


async def show_status(url: str, stop: asyncio.Event, out: Console) -> None:
    """Show the cluster until ``stop`` is set: a live table on a terminal, else a line
    every :data:`STATUS_PRINT_INTERVAL` seconds.

    :param url: the registry API's URL.
    :param stop: set it to end the view.
    :param out: where to draw.
    """
    async with RegistryClient(url, timeout=5.0) as client:
        if out.is_terminal:
            with Live(Table(), console=out, refresh_per_second=2) as live:
                while not stop.is_set():
                    with contextlib.suppress(ClientError):
                        live.update(render_status(await client.cluster()))
                    await sleep_or_stop(stop, STATUS_REFRESH)
            return
        while not stop.is_set():
            with contextlib.suppress(ClientError):
                out.print(status_line(await client.cluster()))
                sys.stdout.flush()
            await sleep_or_stop(stop, STATUS_PRINT_INTERVAL)


def status_line(cluster: dict[str, Any]) -> str:
    """One line per refresh: each node's state and applied revision (``*``: digest differs)."""
    parts = []
    for entry in cluster.get("nodes", []):
        st = entry.get("status") or {}
        same = (st.get("cache") or {}).get("digest") == cluster["digest"]
        parts.append(f"{entry['name']}={st.get('state', 'unreachable')}"
                     f"@{st.get('applied_revision', '-')}{'' if same else '*'}")
    return (f"status: revision {cluster['revision']} digest {cluster['digest'][:12]} | "
            + (" ".join(parts) or "no live nodes"))


def render_status(cluster: dict[str, Any]) -> Table:
    """The ``status`` table of a ``GET /v1/cluster`` answer."""
    registry_rev = int(cluster.get("revision", 0))
    digest = str(cluster.get("digest", ""))
    table = Table(title=f"registry revision {registry_rev} · digest {digest[:12]}",
                  header_style="bold", title_justify="left")
    for column in ("NODE", "STATE", "APPLIED", "REGISTRY", "LAG", "FAILURES", "BLOCKED",
                   "LAST REPAIR", "DIGEST"):
        table.add_column(column, no_wrap=column in ("NODE", "STATE", "DIGEST"),
                         min_width=12 if column == "DIGEST" else None)
    if not cluster.get("nodes"):
        table.caption = "no live node is registered"
    for entry in cluster.get("nodes", []):
        st = entry.get("status")
        if not st:
            table.add_row(entry["name"], "[red]unreachable[/red]", "-", "-", "-", "-", "-", "-",
                          str(entry.get("error", ""))[:40])
            continue
        applied = int(st.get("applied_revision") or 0)
        node_registry = int(st.get("registry_revision") or registry_rev)
        node_digest = str((st.get("cache") or {}).get("digest", ""))
        same = node_digest == digest
        state = str(st.get("state", "?"))
        colour = {"ready": "green", "syncing": "yellow", "repairing": "yellow"}.get(state, "red")
        repair = st.get("repair") or {}
        last = repair.get("last_finished")
        last_repair = (f"{repair.get('last_outcome') or ''} {age(last)}".strip()
                       if last else "-")
        table.add_row(
            entry["name"], f"[{colour}]{state}[/{colour}]", str(applied), str(node_registry),
            str(max(0, node_registry - applied)), str(len(st.get("failures") or [])),
            str(len(st.get("blocked") or [])), last_repair,
            f"[green]{node_digest[:12]}[/green]" if same else f"[red]{node_digest[:12]}[/red]",
        )
    return table


def age(stamp: Any) -> str:
    """A compact "how long ago" for an ISO timestamp or epoch seconds."""
    if stamp in (None, ""):
        return "-"
    try:
        when = (datetime.fromtimestamp(float(stamp), UTC) if isinstance(stamp, int | float)
                else datetime.fromisoformat(str(stamp)))
    except ValueError:
        return str(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

