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
import builtins
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..apply import apply_resources
from ..client import tls_verify
from ..errors import (
    ConflictError,
    NotFoundError,
    ReferencedError,
    RegistryUnavailableError,
    SchemaCacheError,
    TooLargeError,
    ValidationError,
)
from ..manifest import document_to_resource, parse_documents, parse_manifest, reject_duplicates
from ..model import GROUP_KIND, NAME_PATTERN, Resource, parse_key
from ..registry import NodeInfo, Registry
from .console import mount_console
from .snapshot import MAX_PAGE_SIZE, SnapshotCache

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
"""Largest request body accepted, in bytes (1 MiB)."""

DEFAULT_MAX_APPLY_BODY = 256 * 1024 * 1024
"""Largest ``POST /v1/apply`` body, in bytes (256 MiB: a manifest of a few
hundred thousand resources, applied all or nothing in one request)."""

APPLY_PATH = "/v1/apply"

DRAIN_LIMIT = 64 * 1024 * 1024
"""Bytes of an oversized body read and dropped before answering 413 (then the
connection is closed)."""

CLUSTER_STATUS_TIMEOUT = 2.0
"""Seconds to wait for one node's ``/v1/status`` in ``GET /v1/cluster``."""

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


# ---------------------------------------------------------------- response models


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="short machine-readable error code")
    message: str = Field(description="what went wrong")
    field: str | None = Field(default=None, description="dotted path of the offending field")


class WriteResult(BaseModel):
    key: str
    revision: int


class ResourceList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    items: list[dict[str, Any]]
    revision: int = Field(description="registry revision of the snapshot")
    total: int | None = Field(default=None, description=(
        "with `limit`: resources matching the request on every page"))
    continue_: str | None = Field(default=None, alias="continue", description=(
        "with `limit`: pass as `continue` for the next page; absent on the last page"))


class ApplyItem(BaseModel):
    key: str
    action: str = Field(description="created, updated or unchanged")
    revision: int = Field(description="mod_revision of the resource after the apply")


class ApplyResult(BaseModel):
    results: list[ApplyItem]
    revision: int = Field(description="highest revision among the applied resources")


class DigestResult(BaseModel):
    digest: str
    revision: int
    count: int


class RevisionResult(BaseModel):
    revision: int


class NodeEntry(BaseModel):
    name: str
    admin_url: str


class NodeList(BaseModel):
    nodes: list[NodeEntry]


class ClusterNode(BaseModel):
    name: str
    admin_url: str
    status: dict[str, Any] | None = None
    error: str | None = None


class ClusterResult(BaseModel):
    revision: int
    digest: str
    nodes: list[ClusterNode]


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
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "malformed request"),
        (401, "token required"),
        (403, "wrong token"),
        (404, "not found"),
        (409, "conflict"),
        (412, "precondition failed"),
        (413, "body too large"),
        (422, "invalid schema"),
        (503, "registry unavailable"),
    )
}


_KEY_PARAM: Any = Path(pattern=_KEY_PATTERN, description=_KEY_DESCRIPTION,
                       examples=["group/sw_metric"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _ERRORS[c] for c in codes}


class ApiError(Exception):
    """An error turned into a JSON response.

    :param status: HTTP status.
    :param error: short error code.
    :param message: human-readable message.
    :param field: offending field, if any.
    """

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        super().__init__(message)


def _error_response(status: int, error: str, message: str, field: str | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------- body limit


class _BodyLimit:
    """Refuse bodies over ``max_body`` bytes (declared or actually streamed) with 413.

    The body is buffered (it is at most ``max_body`` bytes) and replayed to the
    app, so an oversized chunked upload is refused before any handler runs.
    ``POST /v1/apply`` has a limit of its own, ``max_apply_body``.
    """

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], max_body: int,
                 max_apply_body: int = DEFAULT_MAX_APPLY_BODY):
        self.app = app
        self.max_body = max_body
        self.max_apply_body = max_apply_body

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_apply_body if scope.get("path") == APPLY_PATH else self.max_body
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not (declared.isdigit() and len(declared) <= 19):
                await _error_response(400, "malformed", "bad Content-Length",
                                      "Content-Length")(scope, receive, send)
                return
            if int(declared) > limit:
                await self._refuse(scope, receive, send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # the client went away; let the app see the disconnect
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, scope: _Scope, receive: _Receive, send: _Send, limit: int) -> None:
        # Read (and drop) what the client is still sending: closing on unread data
        # resets the connection and the client never sees the 413.
        drained = 0
        while drained <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = _error_response(
            413, "too_large", f"request body over the limit of {limit} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _replay(messages: list[_Message], receive: _Receive) -> _Receive:
    pending = list(messages)

    async def _receive() -> _Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return _receive


# ---------------------------------------------------------------- request parsing


def _parse_document(body: bytes) -> Resource:
    """One resource document (JSON or YAML): 400 when malformed, 422 when invalid."""
    if not body.strip():
        raise ApiError(400, "malformed", "empty body: expected a resource document")
    if body.lstrip().startswith(b"["):
        raise ApiError(400, "malformed", "expected a mapping with kind, metadata and spec, "
                       "got list")
    try:
        docs = parse_documents(body)
    except ValidationError as exc:
        if exc.field is None:
            raise ApiError(400, "malformed", exc.reason) from None
        raise ValidationError(exc.reason, exc.field) from None
    if len(docs) != 1:
        raise ApiError(400, "malformed", f"expected one document, got {len(docs)}")
    return document_to_resource(docs[0])


def _parse_revision_header(name: str, value: str) -> int:
    raw = value.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise ApiError(400, "malformed",
                       f"{name} must be a mod_revision (an integer), got {value!r}", field=name)
    return int(raw)


async def _expected_revision(
    registry: Registry, key: str, if_match: str | None, if_none_match: str | None
) -> int | None:
    """The CAS revision the precondition headers ask for (``None`` = unconditional)."""
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "malformed", "use either If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError(400, "malformed", "only If-None-Match: * is supported",
                           field="If-None-Match")
        return 0
    if if_match is None:
        return None
    if if_match.strip() == "*":
        try:
            return (await registry.get(key)).mod_revision
        except NotFoundError:
            raise ApiError(412, "precondition_failed", f"{key} does not exist") from None
    return _parse_revision_header("If-Match", if_match)


def _etag(revision: int) -> str:
    return f'"{revision}"'


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
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit, max_body=max_body,  # type: ignore[arg-type]
                       max_apply_body=max_apply_body)

    @app.get("/v1/schemas/{key:path}", responses=_errors(400, 404, 503),
             summary="Get one resource")
    async def get_resource(key: str = _KEY_PARAM) -> JSONResponse:
        parse_key(key)
        resource = await registry.get(key)
        return JSONResponse(resource.to_dict(), headers={"ETag": _etag(resource.mod_revision)})

    @app.put(
        "/v1/schemas/{key:path}",
        summary="Create or update one resource",
        response_model=WriteResult,
        status_code=200,
        responses={201: {"model": WriteResult, "description": "created"},
                   **_errors(400, 401, 403, 409, 412, 413, 422, 503)},
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
        resource = _parse_document(await request.body())
        if resource.key != key:
            raise ApiError(400, "path_mismatch",
                           f"the document is {resource.key}, the path says {key}", field="key")
        expected = await _expected_revision(registry, key, if_match, if_none_match)
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
                            headers={"ETag": _etag(revision)})

    @app.delete(
        "/v1/schemas/{key:path}",
        summary="Delete one resource",
        response_model=WriteResult,
        responses=_errors(400, 401, 403, 404, 409, 412, 413, 503),
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
            await _refuse_delete_if_none_match(registry, key, if_match, if_none_match)
        expected = await _expected_revision(registry, key, if_match, None)
        try:
            revision = await registry.delete(key, expected_revision=expected, cascade=cascade)
        except ReferencedError:
            raise
        except ConflictError as exc:
            if expected is None:
                raise
            raise ApiError(412, "precondition_failed", str(exc)) from None
        return WriteResult(key=key, revision=revision)

    @app.get("/v1/schemas", response_model=ResourceList, responses=_errors(400, 503),
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
        responses=_errors(400, 401, 403, 409, 413, 422, 503),
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": _DOCUMENT_SCHEMA}}}}},
        dependencies=[Depends(require_token)],
    )
    async def apply(request: Request) -> ApplyResult:
        # Off the event loop: a large manifest takes seconds to validate, and
        # other requests must not wait for it.
        resources = await asyncio.to_thread(_parse_manifest_body, await request.body())
        done = await apply_resources(registry, resources)
        results = [ApplyItem(key=r.key, action=r.outcome, revision=r.revision) for r in done]
        return ApplyResult(results=results, revision=max(r.revision for r in results))

    @app.get("/v1/digest", response_model=DigestResult, responses=_errors(503),
             summary="Digest of the registry's schema")
    async def get_digest() -> DigestResult:
        snapshot = await snapshots.get()
        return DigestResult(digest=snapshot.digest, revision=snapshot.revision,
                            count=len(snapshot.items))

    @app.get("/v1/revision", response_model=RevisionResult, responses=_errors(503),
             summary="The registry's current revision")
    async def get_revision() -> RevisionResult:
        return RevisionResult(revision=await registry.revision())

    @app.get("/v1/nodes", response_model=NodeList, responses=_errors(503),
             summary="Live node registrations")
    async def get_nodes() -> NodeList:
        nodes = await _live_nodes(registry)
        return NodeList(nodes=[NodeEntry(name=n.name, admin_url=n.admin_url) for n in nodes])

    @app.get("/v1/cluster", response_model=ClusterResult, responses=_errors(503),
             summary="Every live node's status beside the registry's digest")
    async def get_cluster(
        x_schemacache_node_token: str | None = Header(
            default=None, description="the nodes' admin token, sent to them in place of "
            "the server's own"),
    ) -> ClusterResult:
        snapshot = await snapshots.get()
        nodes = await _live_nodes(registry)
        sent = x_schemacache_node_token or node_token
        headers = {"Authorization": f"Bearer {sent}"} if sent else {}
        async with httpx.AsyncClient(timeout=CLUSTER_STATUS_TIMEOUT, headers=headers,
                                     verify=node_tls) as client:
            entries = await asyncio.gather(
                *(_node_status(client, n.name, n.admin_url) for n in nodes))
        return ClusterResult(revision=snapshot.revision, digest=snapshot.digest,
                             nodes=list(entries))

    mount_console(app, registry, snapshots, require_token, node_token, node_tls)
    return app


async def _refuse_delete_if_none_match(
    registry: Registry, key: str, if_match: str | None, if_none_match: str
) -> None:
    """``If-None-Match: *`` on a delete: "only if it does not exist" — which
    leaves nothing to delete; always refused, nothing written."""
    if if_match is not None:
        raise ApiError(400, "malformed", "use either If-Match or If-None-Match, not both")
    if if_none_match.strip() != "*":
        raise ApiError(400, "malformed", "only If-None-Match: * is supported",
                       field="If-None-Match")
    await registry.get(key)  # 404 when absent
    raise ApiError(412, "precondition_failed", f"{key} exists (If-None-Match: *)",
                   field="If-None-Match")


async def _live_nodes(registry: Registry) -> builtins.list[NodeInfo]:
    return await registry.list_nodes()


def _parse_manifest_body(body: bytes) -> list[Resource]:
    try:
        resources = parse_manifest(body)
    except ValidationError as exc:
        if exc.field is None and exc.document is None:
            raise ApiError(400, "malformed", exc.reason) from None
        raise
    reject_duplicates(resources)
    return resources


async def _node_status(client: httpx.AsyncClient, name: str, admin_url: str) -> ClusterNode:
    try:
        response = await client.get(f"{admin_url.rstrip('/')}/v1/status")
        response.raise_for_status()
        status = response.json()
        if not isinstance(status, dict):
            raise ValueError("status is not a JSON object")
    except (httpx.HTTPError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return ClusterNode(name=name, admin_url=admin_url, error=reason)
    return ClusterNode(name=name, admin_url=admin_url, status=status)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error_response(exc.status, exc.error, exc.message, exc.field, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        if exc.field == "key":
            return _error_response(400, "malformed", str(exc), exc.field)
        return _error_response(422, "invalid", str(exc), exc.field)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error_response(404, "not_found", str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        code = "referenced" if isinstance(exc, ReferencedError) else "conflict"
        return _error_response(409, code, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        # The reason names files and addresses: the log gets it, the client not.
        log.warning("%s %s: registry unavailable: %s", request.method, request.url.path, exc)
        return _error_response(503, "unavailable",
                               "registry unavailable; try again later (details in the "
                               "server log)", headers={"Retry-After": "1"})

    async def too_large(request: Request, exc: Exception) -> Response:
        return _error_response(413, "too_large", str(exc))

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(400, "malformed", f"{loc}: {first.get('msg', 'invalid request')}",
                               loc or None)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"),
                               str(exc.detail),
                               headers=dict(exc.headers) if exc.headers else None)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "internal", "internal error (details in the server log)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(RegistryUnavailableError, unavailable)
    # Any other registry failure (a store that cannot be written, …) is the
    # registry being unavailable to this request, not a bug of the request.
    app.add_exception_handler(SchemaCacheError, unavailable)
    app.add_exception_handler(TooLargeError, too_large)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
               403: "forbidden"}

