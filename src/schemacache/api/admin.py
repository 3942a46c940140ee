"""A node's admin HTTP app: metrics, health, readiness, status, failures, cache, repair.

``create_admin_app(node)`` builds the FastAPI app; serve it with
:class:`schemacache.api.http.UvicornServer`. Endpoints:

==========================  ====================================================
``GET /metrics``            Prometheus text exposition of the node's metrics
``GET /healthz``            200 while the node is healthy, else 503
``GET /readyz``             200 once the initial sync is done, else 503
``GET /v1/status``          ``node.status()``
``GET /v1/failures``        ``{"failures": node.failures()}``
``GET /v1/cache``           ``{"applied_revision": R, "resources": [envelopes]}``
``POST /v1/repair``         202, the request's result (``?wait=true``: 200 once
                            the repair finished, with its result)
==========================  ====================================================

Every error answer is JSON ``{"error": code, "message": text}``.

With a token (``schemacache node --token``/``--token-file``, env
``SCHEMACACHE_NODE_TOKEN``), ``POST /v1/repair``, ``/v1/cache`` and
``/v1/failures`` need ``Authorization: Bearer <token>`` (401 without it, 403
with another); ``/metrics``, ``/healthz``, ``/readyz`` and ``/v1/status``
stay open for probes and scrapers.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..observe.metrics import NodeMetrics

log = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format ``NodeMetrics.render()`` writes; every Prometheus
version scrapes it (newer prometheus-client releases default to announcing
``version=1.0.0``, which older servers do not know)."""
MANUAL_REPAIR_REASON = "manual"

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden",
                 404: "not_found", 405: "method_not_allowed",
                 422: "invalid_request", 500: "internal", 503: "unavailable"}


@runtime_checkable
class AdminTarget(Protocol):
    """What the admin app needs from a node (:class:`schemacache.Node` provides it)."""

    @property
    def name(self) -> str:
        """The node's name."""
        ...

    @property
    def metrics(self) -> NodeMetrics:
        """The node's Prometheus metrics."""
        ...

    def status(self) -> dict[str, Any]:
        """The ``/v1/status`` document."""
        ...

    def failures(self) -> list[dict[str, Any]]:
        """The failure records, one dict each."""
        ...

    def cache_snapshot(self) -> dict[str, Any]:
        """``{"applied_revision": R, "resources": [envelopes]}``."""
        ...

    def is_ready(self) -> bool:
        """True once the initial sync finished."""
        ...

    def is_healthy(self) -> bool:
        """False when the node cannot do its job (e.g. its workers died)."""
        ...

    async def repair(self, reason: str = MANUAL_REPAIR_REASON, wait: bool = True
                     ) -> dict[str, Any]:
        """Request a repair.

        :param reason: why (default ``manual``).
        :param wait: wait for the repair to finish and return its result; with
            ``False`` return the request's result at once (accepted, coalesced).
        """
        ...


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _json(data: Any, status_code: int = 200) -> Response:
    # json.dumps straight away: FastAPI's jsonable_encoder is far slower on a
    # 100,000-resource cache snapshot.
    body = json.dumps(data, default=_default, separators=(",", ":"))
    return Response(content=body, status_code=status_code, media_type=JSON_MEDIA_TYPE)


def _error(status_code: int, message: str, code: str | None = None) -> Response:
    return _json({"error": code or _STATUS_CODES.get(status_code, "error"), "message": message},
                 status_code)


def create_admin_app(node: AdminTarget, token: str | None = None) -> FastAPI:
    """Build the admin HTTP app of one node.

    :param node: the node served (anything implementing :class:`AdminTarget`).
    :param token: bearer token required on repair, cache and failures
        (default ``None``: every endpoint open).
    """
    app = FastAPI(title=f"schemacache node {node.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def require_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise StarletteHTTPException(401, "this endpoint needs the node's bearer token",
                                         headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise StarletteHTTPException(403, "wrong token")

    guarded = [Depends(require_token)]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, "; ".join(str(e.get("msg", e)) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Response:
        log.exception("admin: %s %s failed", request.method, request.url.path)
        return _error(500, f"{type(exc).__name__}: {exc}")

    # Handlers are plain `async def` on purpose: node state belongs to the event
    # loop, so it must not be read from FastAPI's thread pool.

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(content=node.metrics.render(), media_type=METRICS_MEDIA_TYPE)

    @app.get("/healthz")
    async def healthz() -> Response:
        if node.is_healthy():
            return _json({"status": "ok", "node": node.name})
        return _error(503, f"node {node.name} is not healthy", "unhealthy")

    @app.get("/readyz")
    async def readyz() -> Response:
        if node.is_ready():
            return _json({"status": "ready", "node": node.name})
        return _error(503, f"node {node.name} is not ready (initial sync not done, or its "
                      "state store cannot commit: see /v1/status)", "not_ready")

    @app.get("/v1/status")
    async def status() -> Response:
        return _json(node.status())

    @app.get("/v1/failures", dependencies=guarded)
    async def failures() -> Response:
        return _json({"failures": node.failures()})

    @app.get("/v1/cache", dependencies=guarded)
    async def cache() -> Response:
        return _json(node.cache_snapshot())

    @app.post("/v1/repair", dependencies=guarded)
    async def repair(wait: bool = False) -> Response:
        try:
            result = await node.repair(MANUAL_REPAIR_REASON, wait=wait)
        except RuntimeError as exc:  # the node is stopping or not started
            return _error(503, str(exc))
        return _json(result, 200 if wait else 202)

    return app
