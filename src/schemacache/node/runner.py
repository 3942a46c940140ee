"""Run one node as a program: registry, node, admin HTTP server, registration.

``schemacache node`` and ``python -m schemacache.node`` both end up in
:func:`run_node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from ..api.admin import create_admin_app
from ..api.http import UvicornServer, refuse_unprotected
from ..registry import open_registry
from .config import NodeConfig
from .handler import load_handler
from .node import Node
from .text import OneLineFormatter

log = logging.getLogger(__name__)


def _announce(line: str) -> None:
    print(line, flush=True)


def build_node(config: NodeConfig) -> Node:
    """A :class:`Node` (not started) configured from ``config``; opens its registry."""
    registry = open_registry(config.registry)
    handler = load_handler(config.handler) if config.handler else None
    return Node(registry, config, handler=handler)


async def run_node(config: NodeConfig, *, stop: asyncio.Event | None = None,
                   announce: Callable[[str], None] = _announce) -> None:
    """Run a node until SIGTERM/SIGINT (or ``stop`` is set), then stop cleanly.

    Prints ``schemacache node <name> admin http(s)://host:port`` once the admin
    server listens, then registers the node in the registry under that URL.

    :param config: what to run.
    :param stop: set it to stop the node (default: a new event set by the signals).
    :param announce: where the start-up line goes (default: stdout, flushed).
    """
    refuse_unprotected(config.listen, config.token, "node admin API")
    # Bad certificate files fail here, before the node takes its state directory.
    server = UvicornServer(None, config.listen, tls_cert=config.tls_cert,
                           tls_key=config.tls_key)
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    node = build_node(config)
    try:
        await node.start()
        server.app = create_admin_app(node, token=config.token)
        url = await server.start()
        node.alerter.generator_url = url
        announce(f"schemacache node {node.name} admin {url}")
        node.register(url)
        await stop.wait()
        log.info("node %s stopping", node.name)
    finally:
        await server.stop()
        await node.stop()
        await node.registry.close()
        for sig in installed:
            loop.remove_signal_handler(sig)


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, one line per record (see :class:`OneLineFormatter`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])
