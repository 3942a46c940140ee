"""The registry HTTP API: resources, manifests, digests and the cluster view.

Reads are open; writes (``PUT``, ``DELETE``, ``POST /v1/apply``) need the
bearer token when one is configured.  Every error is a JSON object
``{"error", "message", "field"?}`` with a status that says what went wrong:
400 malformed request, 401/403 missing/wrong token, 404 missing key, 409
conflict or referenced, 412 failed precondition (``If-Match`` /
``If-None-Match``), 413 body too large, 422 invalid schema, 503 registry
unavailable.  No answer carries internal details (file paths, addresses):
those go to the server's log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import __version__
from ..apply import apply_resources
from ..client import tls_verify
from ..errors import (
    ConflictError,
    NotFoundError,
    ReferencedError,
)
from ..model import GROUP_KIND, NAME_PATTERN, Resource, parse_key
from ..registry import Registry
from .console import mount_console
from .errors import ApiError, error_responses, install_error_handlers
from .limits import (  # noqa: F401  (the limits were defined here first)
    APPLY_PATH,
    DEFAULT_MAX_APPLY_BODY,
    DEFAULT_MAX_BODY,
    DRAIN_LIMIT,
    BodyLimit,
)
from .models import (
    ApplyItem,
    ApplyResult,
    ClusterResult,
    DigestResult,
    NodeEntry,
    NodeList,
    ResourceList,
    RevisionResult,
    WriteResult,
)
from .nodes import CLUSTER_STATUS_TIMEOUT, live_nodes, node_status
from .requests import (
    etag,
    expected_revision,
    parse_document,
    parse_manifest_body,
    refuse_delete_if_none_match,
)
from .snapshot import MAX_PAGE_SIZE, SnapshotCache

log = logging.getLogger(__name__)


_NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN}
_DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "metadata"],
    "properties": {
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"group": _NAME_SCHEMA, "name": _NAME_SCHEMA},
        },
        "spec": {"type": "object"},
    },
}
_KEY_PATTERN = (r"^(group/[A-Za-z_][A-Za-z0-9_.-]{0,254}|[A-Za-z_][A-Za-z0-9_.-]{0,254}"
                r"/[A-Za-z_][A-Za-z0-9_.-]{0,254}/[A-Za-z_][A-Za-z0-9_.-]{0,254})$")
_KEY_DESCRIPTION = "group/<name> or <kind>/<group>/<name>"
_EXAMPLE_DOCUMENT = {
    "kind": "group",
    "metadata": {"name": "sw_metric"},
    "spec": {"catalog": "MEASURE", "resource_opts": {
        "shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
        "ttl": {"unit": "DAY", "num": 7}}},
}


_KEY_PARAM: Any = Path(pattern=_KEY_PATTERN, description=_KEY_DESCRIPTION,
                       examples=["group/sw_metric"])


# ---------------------------------------------------------------- request parsing


# ---------------------------------------------------------------- the app


def create_registry_app(
    registry: Registry, token: str | None = None, max_body: int = DEFAULT_MAX_BODY,
    max_apply_body: int = DEFAULT_MAX_APPLY_BODY, node_token: str | None = None,
    cacert: str | None = None,
) -> FastAPI:
    """The registry HTTP API over ``registry``, with the operator console at ``/``.

    :param registry: the backend; the caller opens and closes it.
    :param token: bearer token required on writes (default ``None``: writes open).
        Reads never need it.
    :param max_body: largest request body in bytes (default :data:`DEFAULT_MAX_BODY`).
    :param max_apply_body: largest ``POST /v1/apply`` body in bytes (default
        :data:`DEFAULT_MAX_APPLY_BODY`).
    :param node_token: the nodes' admin token, sent by ``GET /v1/cluster`` and
        when the console asks a node to repair (default ``None``: nodes without
        a token).
    :param cacert: CA certificate verifying nodes' ``https://`` admin URLs (default:
        ``SCHEMACACHE_CACERT``, else the system's roots).
    """
    node_tls = tls_verify(cacert)
    app = FastAPI(
        title="schemacache registry API",
        version=__version__,
        description=(
            "The schema registry over HTTP. Reads are open; writes need "
            "`Authorization: Bearer <token>` when the server has a token."
        ),
    )
    bearer = HTTPBearer(auto_error=False, description="required on writes when configured")

    async def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if token is None:
            return
        if credentials is None:
            raise ApiError(401, "unauthorized", "this write needs a bearer token")
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(403, "forbidden", "wrong token")

    snapshots = SnapshotCache(registry)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_body=max_body,  # type: ignore[arg-type]
                       max_apply_body=max_apply_body)

    @app.get("/v1/schemas/{key:path}", responses=error_responses(400, 404, 503),
             summary="Get one resource")
    async def get_resource(key: str = _KEY_PARAM) -> JSONResponse:
        parse_key(key)
        resource = await registry.get(key)
        return JSONResponse(resource.to_dict(), headers={"ETag": etag(resource.mod_revision)})

    @app.put(
        "/v1/schemas/{key:path}",
        summary="Create or update one resource",
        response_model=WriteResult,
        status_code=200,
        responses={201: {"model": WriteResult, "description": "created"},
                   **error_responses(400, 401, 403, 409, 412, 413, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": _DOCUMENT_SCHEMA, "example": _EXAMPLE_DOCUMENT}}}},
        dependencies=[Depends(require_token)],
    )
    async def put_resource(
        request: Request,
        key: str = _KEY_PARAM,
        if_match: str | None = Header(default=None),
        if_none_match: str | None = Header(default=None),
    ) -> JSONResponse:
        parse_key(key)
        resource = parse_document(await request.body())
        if resource.key != key:
            raise ApiError(400, "path_mismatch",
                           f"the document is {resource.key}, the path says {key}", field="key")
        expected = await expected_revision(registry, key, if_match, if_none_match)
        if expected is None:
            try:
                await registry.get(key)
                existed = True
            except NotFoundError:
                existed = False
        else:
            existed = expected != 0
        try:
            revision = await registry.put(resource, expected_revision=expected)
        except ConflictError as exc:
            if expected is None:
                raise
            raise ApiError(412, "precondition_failed", str(exc)) from None
        return JSONResponse({"key": key, "revision": revision},
                            status_code=200 if existed else 201,
                            headers={"ETag": etag(revision)})

    @app.delete(
        "/v1/schemas/{key:path}",
        summary="Delete one resource",
        response_model=WriteResult,
        responses=error_responses(400, 401, 403, 404, 409, 412, 413, 503),
        dependencies=[Depends(require_token)],
    )
    async def delete_resource(
        key: str = _KEY_PARAM,
        cascade: bool = Query(default=False, description="delete dependents first"),
        if_match: str | None = Header(default=None),
        if_none_match: str | None = Header(default=None),
    ) -> WriteResult:
        parse_key(key)
        if if_none_match is not None:
            await refuse_delete_if_none_match(registry, key, if_match, if_none_match)
        expected = await expected_revision(registry, key, if_match, None)
        try:
            revision = await registry.delete(key, expected_revision=expected, cascade=cascade)
        except ReferencedError:
            raise
        except ConflictError as exc:
            if expected is None:
                raise
            raise ApiError(412, "precondition_failed", str(exc)) from None
        return WriteResult(key=key, revision=revision)

    @app.get("/v1/schemas", response_model=ResourceList, responses=error_responses(400, 503),
             response_model_exclude_none=True,
             summary="List resources")
    async def list_resources(
        kind: str | None = Query(default=None, pattern=NAME_PATTERN),
        group: str | None = Query(default=None, pattern=NAME_PATTERN),
        limit: int | None = Query(default=None, ge=1, le=MAX_PAGE_SIZE, description=(
            "page size; with it the answer is one page in key order")),
        continue_: str | None = Query(default=None, alias="continue", max_length=1024,
                                      description="the `continue` of the previous page"),
    ) -> ResourceList:
        prefix = ""
        if kind is not None:
            prefix = f"{kind}/"
            if group is not None and kind != GROUP_KIND:
                prefix = f"{kind}/{group}/"

        def in_group(r: Resource) -> bool:
            return (r.name == group if r.kind == GROUP_KIND and kind == GROUP_KIND
                    else r.group == group)

        keep = in_group if group is not None else None
        if limit is not None or continue_ is not None:
            snapshot = await snapshots.get()
            page = snapshot.page(prefix, continue_, limit or MAX_PAGE_SIZE, keep)
            return ResourceList(items=[r.to_dict() for r in page.items],
                                revision=page.revision, total=page.total,
                                continue_=page.next_after)
        items, revision = await registry.list(prefix)
        if keep is not None:
            items = [r for r in items if keep(r)]
        return ResourceList(items=[r.to_dict() for r in items], revision=revision)

    @app.post(
        APPLY_PATH,
        response_model=ApplyResult,
        summary="Apply a multi-document manifest",
        description=("A YAML or JSON manifest (one document, a list, or YAML documents "
                     "separated by ---), applied in dependency order, all or nothing: "
                     "every rule is checked before the first write and the writes are "
                     "one transaction; an error names the document. Bodies up to "
                     f"{DEFAULT_MAX_APPLY_BODY // (1024 * 1024)} MiB by default."),
        responses=error_responses(400, 401, 403, 409, 413, 422, 503),
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": _DOCUMENT_SCHEMA}}}}},
        dependencies=[Depends(require_token)],
    )
    async def apply(request: Request) -> ApplyResult:
        # Off the event loop: a large manifest takes seconds to validate, and
        # other requests must not wait for it.
        resources = await asyncio.to_thread(parse_manifest_body, await request.body())
        done = await apply_resources(registry, resources)
        results = [ApplyItem(key=r.key, action=r.outcome, revision=r.revision) for r in done]
        return ApplyResult(results=results, revision=max(r.revision for r in results))

    @app.get("/v1/digest", response_model=DigestResult, responses=error_responses(503),
             summary="Digest of the registry's schema")
    async def get_digest() -> DigestResult:
        snapshot = await snapshots.get()
        return DigestResult(digest=snapshot.digest, revision=snapshot.revision,
                            count=len(snapshot.items))

    @app.get("/v1/revision", response_model=RevisionResult, responses=error_responses(503),
             summary="The registry's current revision")
    async def get_revision() -> RevisionResult:
        return RevisionResult(revision=await registry.revision())

    @app.get("/v1/nodes", response_model=NodeList, responses=error_responses(503),
             summary="Live node registrations")
    async def get_nodes() -> NodeList:
        nodes = await live_nodes(registry)
        return NodeList(nodes=[NodeEntry(name=n.name, admin_url=n.admin_url) for n in nodes])

    @app.get("/v1/cluster", response_model=ClusterResult, responses=error_responses(503),
             summary="Every live node's status beside the registry's digest")
    async def get_cluster(
        x_schemacache_node_token: str | None = Header(
            default=None, description="the nodes' admin token, sent to them in place of "
            "the server's own"),
    ) -> ClusterResult:
        snapshot = await snapshots.get()
        nodes = await live_nodes(registry)
        sent = x_schemacache_node_token or node_token
        headers = {"Authorization": f"Bearer {sent}"} if sent else {}
        async with httpx.AsyncClient(timeout=CLUSTER_STATUS_TIMEOUT, headers=headers,
                                     verify=node_tls) as client:
            entries = await asyncio.gather(
                *(node_status(client, n.name, n.admin_url) for n in nodes))
        return ClusterResult(revision=snapshot.revision, digest=snapshot.digest,
                             nodes=list(entries))

    mount_console(app, registry, snapshots, require_token, node_token, node_tls)
    return app


