"""The client commands of ``schemacache``, against a registry API's ``--server``:
``apply``, ``get``, ``export``, ``delete``, ``status``, ``digest`` (registered by
:mod:`schemacache.cli`)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from .cli_base import (
    DEFAULT_WAIT_TIMEOUT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    WAIT_POLL_INTERVAL,
    BriefOutput,
    BriefOutputOpt,
    CacertOpt,
    NodeTokenOpt,
    Output,
    ServerOpt,
    TokenOpt,
    command,
    err,
    fail,
    out,
    print_lines,
    run,
)
from .client import DEFAULT_SERVER, ClientError, RegistryClient
from .errors import ValidationError
from .manifest import EncodedResource
from .model import GROUP_KIND, Resource, make_key
from .views import age, render_status

# ---------------------------------------------------------------- client commands


def _read_manifests(files: list[str], kind: str | None = None) -> list[EncodedResource]:
    from .manifest import encode, load_encoded, parse_manifest

    for f in files:
        if f != "-" and not Path(f).exists():
            raise fail(f"{f}: no such file or directory")
    resources: list[EncodedResource] = []
    seen: set[str] = set()
    for f in files:
        try:
            if f == "-":
                loaded = encode(parse_manifest(sys.stdin.buffer.read(), kind=kind))
            else:
                loaded = load_encoded(f, kind=kind)
        except ValidationError as exc:
            raise fail(f"invalid manifest: {exc}") from None
        for r in loaded:
            if r.key in seen:
                raise fail(f"invalid manifest: {r.key} is defined twice")
            seen.add(r.key)
        resources.extend(loaded)
    return resources


@command
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
    code = run(_apply(resources, wait, timeout, server, token, cacert))
    raise typer.Exit(code)


async def _apply(resources: list[EncodedResource], wait: bool, wait_seconds: float,
                 server: str, token: str | None, cacert: str | None = None) -> int:
    async with RegistryClient(server, token, cacert=cacert) as client:
        result = await client.apply_json(r.json for r in resources)
        print_lines(f"{item['key']} {item['action']}" for item in result["results"])
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


@command
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
    run(_get(kind, ref, output, server, token, cacert))


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


@command
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

    docs = run(listing())["items"]
    try:
        written = export_documents((Resource.from_stored(d) for d in docs), directory)
    except (FileExistsError, ValidationError) as exc:
        raise fail(str(exc)) from None
    out.print(f"exported {len(written)} resources to {directory}")


@command
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
    run(_delete(key, cascade, server, token, cacert))


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


@command
def status(
    output: BriefOutputOpt = BriefOutput.table,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
    node_token: NodeTokenOpt = None,
) -> None:
    """Every live node's state beside the registry's revision and digest."""
    cluster = run(_cluster(server, token, cacert, node_token))
    if output is BriefOutput.json:
        out.print_json(json.dumps(cluster))
        return
    out.print(render_status(cluster))


async def _cluster(server: str, token: str | None, cacert: str | None = None,
                   node_token: str | None = None) -> dict[str, Any]:
    async with RegistryClient(server, token, cacert=cacert) as client:
        return await client.cluster(node_token=node_token)


@command
def digest(
    output: BriefOutputOpt = BriefOutput.table,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    cacert: CacertOpt = None,
) -> None:
    """The registry's schema digest (equals every converged node's cache digest)."""
    result = run(_digest(server, token, cacert))
    if output is BriefOutput.json:
        out.print_json(json.dumps(result))
    else:
        out.print(f"{result['digest']}  revision {result['revision']}  {result['count']} keys")


async def _digest(server: str, token: str | None, cacert: str | None = None) -> dict[str, Any]:
    async with RegistryClient(server, token, cacert=cacert) as client:
        return await client.digest()
