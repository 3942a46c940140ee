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
import functools
import inspect
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import typer
import yaml
from rich.console import Console
from rich.table import Table

from . import __version__
from .client import DEFAULT_SERVER, ClientError, RegistryClient
from .errors import SchemaCacheError, ValidationError
from .model import GROUP_KIND, Resource, make_key
from .node import config as node_config
from .node_command import command_from_settings, invalid_value
from .views import age, render_status

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

DEFAULT_LISTEN = "127.0.0.1:8080"
"""Where ``serve`` and ``up`` bind the registry API."""

DEFAULT_WAIT_TIMEOUT = 60.0
"""Seconds ``apply --wait`` waits for the nodes."""

WAIT_POLL_INTERVAL = 0.2
"""Seconds between two ``GET /v1/cluster`` polls of ``apply --wait``."""

app = typer.Typer(
    name="schemacache",
    help="Self-healing, versioned schema caches: registry API, nodes and client.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
STATUS_WIDTH = 160
"""Columns of the output when it is not a terminal (rich would assume 80)."""

out = Console(highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() else STATUS_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"schemacache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Self-healing, versioned schema caches: registry API, nodes and client."""


_T = TypeVar("_T")

ServerOpt = Annotated[str, typer.Option("--server", envvar="SCHEMACACHE_SERVER",
                                        help="registry API base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="SCHEMACACHE_TOKEN",
                                              help="bearer token for writes")]
CacertOpt = Annotated[str | None, typer.Option(
    "--cacert", envvar="SCHEMACACHE_CACERT",
    help="CA certificate (PEM) that verifies https:// servers")]
TlsCertOpt = Annotated[str | None, typer.Option(
    "--tls-cert", help="serve HTTPS with this certificate (PEM; with --tls-key)")]
TlsKeyOpt = Annotated[str | None, typer.Option(
    "--tls-key", help="private key (PEM) of --tls-cert")]


NodeTokenOpt = Annotated[str | None, typer.Option(
    "--node-token", envvar=node_config.NODE_TOKEN_ENV,
    help="bearer token of the nodes' admin APIs")]


class Output(StrEnum):
    table = "table"
    yaml = "yaml"
    json = "json"
    banyandb = "banyandb"


class BriefOutput(StrEnum):
    table = "table"
    json = "json"


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit to raise."""
    err.print(f"[red]error:[/red] {message}", markup=True)
    return typer.Exit(code)


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine; turn the errors a user can act on into one line and exit 1."""
    try:
        return asyncio.run(coro)
    except ClientError as exc:
        raise fail(exc.render()) from None
    except ValidationError as exc:
        raise fail(f"invalid: {exc}") from None
    except SchemaCacheError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc)) from None


def _command(fn: Callable[..., None]) -> Callable[..., None]:
    """Keep a traceback off the terminal for any error a command did not expect."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:  # the last line of defence
            raise fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper


# ---------------------------------------------------------------- serve


@app.command()
@_command
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
    token = _resolve_token(token, token_file)
    _check_listen(listen, token, "registry API")
    _run(_serve(registry, listen, token, node_token, tls=(tls_cert, tls_key), cacert=cacert))


def _resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token of ``--token`` or ``--token-file`` (exit 2 on a bad combination or file)."""
    if token and token_file:
        raise fail("use --token or --token-file, not both", EXIT_USAGE)
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read token file: {exc}", EXIT_USAGE) from None
        if not token:
            raise fail(f"token file {token_file} is empty", EXIT_USAGE)
    return token or None


def _check_listen(listen: str, token: str | None, what: str) -> None:
    from .api.http import UnprotectedListenError, refuse_unprotected

    try:
        refuse_unprotected(listen, token, what)
    except (ValueError, UnprotectedListenError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None


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

    token = _resolve_token(settings.pop("token"), token_file)
    _check_listen(settings["listen"], token, "node admin API")
    try:
        config = node_config.NodeConfig(token=token, **settings)
    except pydantic.ValidationError as exc:
        raise fail(invalid_value(node_config.NodeConfig, exc), EXIT_USAGE) from None
    configure_logging(log_level)
    with contextlib.suppress(KeyboardInterrupt):
        _run(run_node(config))


NODE_EXTRA_OPTIONS = [
    inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default="INFO",
                      annotation=Annotated[str, typer.Option(help="logging level")]),
    inspect.Parameter("token_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Path | None, typer.Option(
                          help="file holding the token (instead of --token)")]),
]
"""Options of ``node`` that are not node settings."""

node = app.command("node")(_command(command_from_settings(
    node_config.NodeConfig, _node, extra=NODE_EXTRA_OPTIONS,
    doc="Run one node: watch the registry, keep the cache, call the handler, serve admin HTTP.")))


# ---------------------------------------------------------------- up / demo


@app.command()
@_command
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

    raise typer.Exit(_run(run_up(nodes=nodes, data_dir=data_dir, listen=listen,
                                 registry=registry, node_token=node_token)))


@app.command()
@_command
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="keep the demo's data here "
                                                       "(default: a temporary directory)")] = None,
) -> None:
    """Scripted fault scenario on 3 nodes; exits 0 when every node converged."""
    from .demo import run_demo

    raise typer.Exit(_run(run_demo(data_dir=data_dir)))


# ---------------------------------------------------------------- client commands


def _read_manifests(files: list[str], kind: str | None = None) -> list[Resource]:
    from .manifest import load_resources, parse_manifest

    for f in files:
        if f != "-" and not Path(f).exists():
            raise fail(f"{f}: no such file or directory")
    resources: list[Resource] = []
    seen: set[str] = set()
    for f in files:
        try:
            if f == "-":
                loaded = parse_manifest(sys.stdin.buffer.read(), kind=kind)
            else:
                loaded = load_resources(f, kind=kind)
        except ValidationError as exc:
            raise fail(f"invalid manifest: {exc}") from None
        for r in loaded:
            if r.key in seen:
                raise fail(f"invalid manifest: {r.key} is defined twice")
            seen.add(r.key)
        resources.extend(loaded)
    return resources


@app.command()
@_command
def apply(
    file: Annotated[list[str], typer.Option("--filename", "-f",
                                            help="manifest file, directory, or - for stdin")],
    kind: Annotated[str | None, typer.Option(
        help="kind of documents that name none (BanyanDB documents: group, measure, …)")] = None,
    wait: Annotated[bool, typer.Option(help="wait until every live node applied it")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="seconds --wait waits")] = (
        DEFAULT_WAIT_TIMEOUT),
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """Create or update the resources of a manifest (validated locally first).

    With --wait, exits 3 when a live node has not reached the apply's revision in
    time, and 1 when a node recorded a handler failure for one of the resources.
    """
    if kind is not None:
        from .banyandb import kind_from_name

        resolved = kind_from_name(kind)
        if resolved is None:
            from .kinds import KINDS

            raise fail(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})", EXIT_USAGE)
        kind = resolved
    resources = _read_manifests(file, kind)
    code = _run(_apply(resources, wait, timeout, server, token, cacert))
    raise typer.Exit(code)


async def _apply(resources: list[Resource], wait: bool, wait_seconds: float, server: str,
                 token: str | None, cacert: str | None = None) -> int:
    async with RegistryClient(server, token, cacert=cacert) as client:
        result = await client.apply(resources)
        for item in result["results"]:
            out.print(f"{item['key']} {item['action']}")
        if not wait:
            return EXIT_OK
        lagging = await wait_for_nodes(client, int(result["revision"]), wait_seconds)
        if lagging:
            err.print(f"[red]error:[/red] timed out after {wait_seconds:g}s waiting for "
                      f"revision {result['revision']} on: {', '.join(lagging)}", markup=True)
            return EXIT_TIMEOUT
        failed = failed_keys(await client.cluster(), {i["key"] for i in result["results"]})
    if failed:
        shown = "; ".join(f"{node} {key}: {error}" for node, key, error in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        err.print(f"[red]error:[/red] applied, but handlers failed: {shown}{more}", markup=True)
        return EXIT_ERROR
    return EXIT_OK


def failed_keys(cluster: dict[str, Any], keys: set[str]) -> list[tuple[str, str, str]]:
    """``(node, key, last_error)`` of every failure record of ``keys`` in a cluster view."""
    found = []
    for entry in cluster.get("nodes", []):
        for record in (entry.get("status") or {}).get("failures") or []:
            if record.get("key") in keys:
                found.append((entry["name"], str(record["key"]),
                              str(record.get("last_error", ""))))
    return found


async def wait_for_nodes(client: RegistryClient, revision: int, wait_seconds: float,
                         show: bool = True) -> list[str]:
    """Poll the cluster until every live node's ``applied_revision`` reaches ``revision``.

    A node whose applied revision is above the registry's current revision has
    not yet noticed that the registry went back (a restored backup): it counts
    as not there yet, since comparing revisions alone would call it done while
    its cache still holds a history the registry no longer has.

    :param client: the registry API client.
    :param revision: the revision to reach.
    :param wait_seconds: seconds to wait.
    :param show: draw a progress display on stderr (default ``True``).
    :returns: the nodes that did not make it (empty on success).
    """
    from rich.progress import BarColumn, Progress, TextColumn

    deadline = time.monotonic() + wait_seconds
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), console=err,
                        transient=True, disable=not show)
    tasks: dict[str, Any] = {}
    with progress:
        while True:
            cluster = await client.cluster()
            # Read after the nodes' statuses: no node's applied revision can be
            # above it unless the registry went back.
            current = await client.revision()
            lagging: list[str] = []
            for entry in cluster["nodes"]:
                applied = _applied_revision(entry)
                if entry["name"] not in tasks:
                    tasks[entry["name"]] = progress.add_task(entry["name"], total=revision)
                progress.update(tasks[entry["name"]], completed=min(applied, revision))
                if applied < revision or applied > current:
                    lagging.append(entry["name"])
            if not lagging:
                return []
            if time.monotonic() >= deadline:
                return lagging
            await asyncio.sleep(WAIT_POLL_INTERVAL)


def _applied_revision(entry: dict[str, Any]) -> int:
    status = entry.get("status") or {}
    try:
        return int(status.get("applied_revision") or 0)
    except (TypeError, ValueError):
        return 0


def _key_for(kind: str, ref: str) -> str:
    if kind == GROUP_KIND:
        if "/" in ref:
            raise fail(f"a group is named by NAME alone, got {ref!r}", EXIT_USAGE)
        return make_key(kind, None, ref)
    group, sep, name = ref.partition("/")
    if not sep or not group or not name or "/" in name:
        raise fail(f"expected GROUP/NAME, got {ref!r}", EXIT_USAGE)
    return make_key(kind, group, name)


@app.command()
@_command
def get(
    kind: Annotated[str, typer.Argument(help="resource kind (group, measure, …) or all")],
    ref: Annotated[str | None, typer.Argument(
        metavar="[GROUP/NAME]", help="one resource, or GROUP to list a group's members")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="output format")] = (
        Output.table),
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """Show one resource or list resources."""
    _run(_get(kind, ref, output, server, token, cacert))


async def _get(kind: str, ref: str | None, output: Output, server: str,
               token: str | None, cacert: str | None = None) -> None:
    async with RegistryClient(server, token, cacert=cacert) as client:
        if ref is not None and (kind == GROUP_KIND or "/" in ref):
            doc = await client.get(_key_for(kind, ref))
            _print_resources([doc], output, single=True)
            return
        listing = await client.list_resources(kind=None if kind == "all" else kind, group=ref)
        _print_resources(listing["items"], output, single=False, kind=kind)


def _print_resources(docs: list[dict[str, Any]], output: Output, single: bool,
                     kind: str | None = None) -> None:
    if output is Output.json:
        out.print_json(json.dumps(docs[0] if single else docs))
    elif output is Output.banyandb:
        from .banyandb import dumps, to_document

        written = [to_document(Resource.from_stored(d)) for d in docs]
        sys.stdout.write(dumps(written[0] if single else written))
    elif output is Output.yaml:
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False) if docs else "")
    else:
        if not docs:
            from .kinds import KINDS

            known = "" if not kind or kind in KINDS or kind == "all" else (
                f" (known kinds: {', '.join(sorted(KINDS))})")
            err.print(f"no resources found{known}")
            return
        table = Table(box=None, header_style="bold")
        for column in ("KIND", "GROUP", "NAME", "REVISION", "UPDATED"):
            table.add_column(column)
        for d in docs:
            meta = d.get("metadata", {})
            table.add_row(d.get("kind", ""), meta.get("group") or "-", meta.get("name", ""),
                          str(meta.get("mod_revision", "")), age(meta.get("updated_at")))
        out.print(table)


@app.command()
@_command
def export(
    directory: Annotated[Path, typer.Argument(
        help="target directory, new or empty (created if missing)")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """Write the whole registry as BanyanDB documents, one file per object.

    The layout is BanyanDB's: groups/<name>.json, measures/<group>/<name>.json,
    index_rules/…, one folder per kind; `apply -f DIR` reads it back.
    """
    from .banyandb import export as export_documents

    async def listing() -> dict[str, Any]:
        async with RegistryClient(server, token, cacert=cacert) as client:
            return await client.list_resources()

    docs = _run(listing())["items"]
    try:
        written = export_documents((Resource.from_stored(d) for d in docs), directory)
    except (FileExistsError, ValidationError) as exc:
        raise fail(str(exc)) from None
    out.print(f"exported {len(written)} resources to {directory}")


@app.command()
@_command
def delete(
    kind: Annotated[str, typer.Argument(help="resource kind")],
    ref: Annotated[str, typer.Argument(metavar="GROUP/NAME", help="GROUP/NAME (NAME for a "
                                                                  "group)")],
    cascade: Annotated[bool, typer.Option(help="delete the resources that reference it "
                                               "first")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """Delete one resource."""
    key = _key_for(kind, ref)
    _run(_delete(key, cascade, server, token, cacert))


async def _delete(key: str, cascade: bool, server: str, token: str | None,
                  cacert: str | None = None) -> None:
    async with RegistryClient(server, token, cacert=cacert) as client:
        try:
            result = await client.delete(key, cascade=cascade)
        except ClientError as exc:
            if exc.error == "referenced":
                exc.message = exc.message.replace("use cascade=True", "use --cascade")
            raise ClientError(exc.status, exc.error, exc.message, exc.field) from None
    out.print(f"{key} deleted (revision {result['revision']})")


@app.command()
@_command
def status(
    output: Annotated[BriefOutput, typer.Option("--output", "-o", help="output format")] = (
        BriefOutput.table),
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
    node_token: NodeTokenOpt = None,
) -> None:
    """Every live node's state beside the registry's revision and digest."""
    cluster = _run(_cluster(server, token, cacert, node_token))
    if output is BriefOutput.json:
        out.print_json(json.dumps(cluster))
        return
    out.print(render_status(cluster))


async def _cluster(server: str, token: str | None, cacert: str | None = None,
                   node_token: str | None = None) -> dict[str, Any]:
    async with RegistryClient(server, token, cacert=cacert) as client:
        return await client.cluster(node_token=node_token)


@app.command()
@_command
def digest(
    output: Annotated[BriefOutput, typer.Option("--output", "-o", help="output format")] = (
        BriefOutput.table),
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """The registry's schema digest (equals every converged node's cache digest)."""
    result = _run(_digest(server, token, cacert))
    if output is BriefOutput.json:
        out.print_json(json.dumps(result))
    else:
        out.print(f"{result['digest']}  revision {result['revision']}  {result['count']} keys")


async def _digest(server: str, token: str | None, cacert: str | None = None) -> dict[str, Any]:
    async with RegistryClient(server, token, cacert=cacert) as client:
        return await client.digest()


def main() -> None:
    """Entry point of the ``schemacache`` command."""
    app()
