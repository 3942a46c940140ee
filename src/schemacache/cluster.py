"""A local cluster (``schemacache up``).

It runs the registry API in this process over an embedded SQLite registry (or
any registry URL) and each node as a ``python -m schemacache node`` subprocess,
supervised by :mod:`schemacache.supervisor`; :mod:`schemacache.views` draws
the status, :mod:`schemacache.demo` scripts the fault demo on the same parts.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rich.console import Console

from .client import RegistryClient
from .manifest import load_resources
from .supervisor import (  # noqa: F401  (NodeProcess and STOP_GRACE were defined here)
    STOP_GRACE,
    NodeProcess,
    install_signal_handlers,
    make_dir,
    remove_signal_handlers,
    stop_all,
    supervise,
)
from .views import make_console, show_status

READY_TIMEOUT = 60.0
"""Seconds ``up`` waits for its nodes to be ready before printing the table anyway."""

EXAMPLES_PACKAGE_DIR = "examples"
"""Folder inside the package holding the example schema ``up`` and ``demo`` apply
(also reachable as ``examples/`` at the top of a source checkout)."""


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


class ApiServer:
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

    out = console or make_console()
    if not is_loopback(parse_listen(listen)[0]):
        out.print("error: up serves the API without a token; bind a loopback address")
        return 2
    make_dir(data_dir)
    registry_url = registry or sqlite_url(data_dir / "registry.db")
    stop = asyncio.Event()
    install_signal_handlers(stop)
    api = ApiServer(registry_url, listen, node_token)
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
        supervisor = asyncio.create_task(supervise(children, stop, out))
        try:
            await show_status(url, stop, out)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
    finally:
        remove_signal_handlers()
        out.print("stopping: nodes, then the API")
        await stop_all(children)
        await api.stop()
        out.print("stopped")
    return 0


async def _seed_examples(api: ApiServer, url: str, out: Console) -> None:
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
