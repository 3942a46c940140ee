"""The ``schemacache`` command line.

Server side: ``serve`` (registry HTTP API), ``node`` (one node), ``up`` (a
local cluster), ``demo`` (the scripted fault scenario).  Client side, against
``--server`` (env ``SCHEMACACHE_SERVER``, token ``SCHEMACACHE_TOKEN``):
``apply``, ``get``, ``export``, ``delete``, ``status``, ``digest``.

Exit codes: 0 ok, 1 error (one line on stderr), 2 usage, 3 timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer

from . import cli_client
from .cli_base import (  # noqa: F401  (EXIT_* and DEFAULT_* were defined here first)
    DEFAULT_LISTEN,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    NodeTokenOpt,
    TlsCertOpt,
    TlsKeyOpt,
    app,
    check_listen,
    command,
    fail,
    out,
    resolve_token,
    run,
)
from .errors import SchemaCacheError
from .node import config as node_config
from .node_command import command_from_settings, invalid_value

__all__ = ["app", "main"]


# ---------------------------------------------------------------- serve


@app.command()
@command
def serve(
    registry: Annotated[str, typer.Option(help="registry URL: memory://, sqlite:///file.db, "
                                               "etcd://host:port/prefix, "
                                               "etcds://[user@]host:port/prefix?ca=…")],
    listen: Annotated[str, typer.Option(help="host:port to bind")] = DEFAULT_LISTEN,
    token: Annotated[str | None, typer.Option(help="bearer token required on writes")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file holding the token")] = None,
    node_token: NodeTokenOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    cacert: Annotated[str | None, typer.Option(
        "--cacert", envvar="SCHEMACACHE_CACERT",
        help="CA certificate (PEM) that verifies nodes' https:// admin URLs")] = None,
) -> None:
    """Serve the registry HTTP API and the operator console at / (reads open; writes
    need the token when one is set)."""
    token = resolve_token(token, token_file)
    check_listen(listen, token, "registry API")
    run(_serve(registry, listen, token, node_token, tls=(tls_cert, tls_key), cacert=cacert))


async def _serve(url: str, listen: str, token: str | None, node_token: str | None,
                 tls: tuple[str | None, str | None] = (None, None),
                 cacert: str | None = None) -> None:
    from .api.http import UvicornServer
    from .api.server import create_registry_app
    from .registry import open_registry

    registry = open_registry(url)
    try:
        # A registry that refuses us (credentials, TLS, permissions) or that we
        # cannot use (a file we cannot write) is an error at start, naming it,
        # not a server answering 503 to every request.
        try:
            await registry.check()
        except SchemaCacheError as exc:
            raise fail(f"cannot serve registry {url}: {exc}") from None
        app = create_registry_app(registry, token=token, node_token=node_token,
                                  cacert=cacert)
        server = UvicornServer(app, listen, tls_cert=tls[0], tls_key=tls[1])
        base = await server.start()
        shown = getattr(registry, "url", url)
        out.print(f"schemacache registry API listening on {base} (registry {shown}); "
                  f"console at {base}/")
        sys.stdout.flush()
        try:
            await _until_signalled()
        finally:
            await server.stop()
    finally:
        await registry.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------- node


def _node(settings: dict[str, Any], log_level: str, token_file: Path | None) -> None:
    from .node.runner import configure_logging, run_node

    token = resolve_token(settings.pop("token"), token_file)
    check_listen(settings["listen"], token, "node admin API")
    try:
        config = node_config.NodeConfig(token=token, **settings)
    except pydantic.ValidationError as exc:
        raise fail(invalid_value(node_config.NodeConfig, exc), EXIT_USAGE) from None
    configure_logging(log_level)
    with contextlib.suppress(KeyboardInterrupt):
        run(run_node(config))


NODE_EXTRA_OPTIONS = [
    inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default="INFO",
                      annotation=Annotated[str, typer.Option(help="logging level")]),
    inspect.Parameter("token_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Path | None, typer.Option(
                          help="file holding the token (instead of --token)")]),
]
"""Options of ``node`` that are not node settings."""

node = app.command("node")(command(command_from_settings(
    node_config.NodeConfig, _node, extra=NODE_EXTRA_OPTIONS,
    doc="Run one node: watch the registry, keep the cache, call the handler, serve admin HTTP.")))


# ---------------------------------------------------------------- up / demo


@app.command()
@command
def up(
    nodes: Annotated[int, typer.Option(min=1, max=64, help="number of nodes")] = 3,
    data_dir: Annotated[Path, typer.Option(help="registry and node state")] = Path("./var"),
    listen: Annotated[str, typer.Option(help="registry API host:port")] = DEFAULT_LISTEN,
    registry: Annotated[str | None, typer.Option(
        help="registry URL shared by the API and the nodes (default: "
             "sqlite:///DATA_DIR/registry.db; etcd:// and etcds:// work too)")] = None,
    node_token: NodeTokenOpt = None,
) -> None:
    """Run a local cluster: SQLite registry, the API and N nodes, until Ctrl-C."""
    from .cluster import run_up

    raise typer.Exit(run(run_up(nodes=nodes, data_dir=data_dir, listen=listen,
                                 registry=registry, node_token=node_token)))


@app.command()
@command
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="keep the demo's data here "
                                                       "(default: a temporary directory)")] = None,
) -> None:
    """Scripted fault scenario on 3 nodes; exits 0 when every node converged."""
    from .demo import run_demo

    raise typer.Exit(run(run_demo(data_dir=data_dir)))


# Client commands, registered after the server-side ones (help lists them in this order).
for _client_command in (cli_client.apply, cli_client.get, cli_client.export, cli_client.delete,
                        cli_client.status, cli_client.digest):
    app.command()(_client_command)


def main() -> None:
    """Entry point of the ``schemacache`` command."""
    app()
