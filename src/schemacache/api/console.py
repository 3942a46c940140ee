"""The operator console: static pages at ``/`` and the few endpoints they need.

The page itself (``static/``: one HTML file, one script, one style sheet, no
build step and nothing fetched from elsewhere) reads the registry API:
``GET /v1/cluster`` for the nodes and their failures, polled;
``GET /v1/kinds`` and ``GET /v1/schemas?limit=&continue=`` for the schema
browser, one page at a time; ``GET /v1/schemas/{key}`` for one document.
Its one write is ``POST /v1/nodes/{name}/repair``, which needs the server's
write token and asks that node's admin API for a manual repair (with the
nodes' admin token when the server has one).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..registry import Registry
from .errors import ApiError, error_responses
from .nodes import live_nodes
from .snapshot import SnapshotCache

STATIC_DIR = Path(__file__).with_name("static")
"""The console's files, shipped inside the package."""

CONSOLE_PATH = "/console"
"""Where the console's script and style sheet are served."""

REPAIR_REQUEST_TIMEOUT = 5.0
"""Seconds to wait for a node to accept a repair request."""

NODE_NAME_MAX = 253
"""Longest node name accepted in a path."""


class KindCount(BaseModel):
    kind: str
    count: int


class KindList(BaseModel):
    revision: int = Field(description="registry revision of the counts")
    count: int = Field(description="resources of every kind")
    kinds: list[KindCount]


def mount_console(app: FastAPI, registry: Registry, snapshots: SnapshotCache,
                  require_token: Callable[..., Any], node_token: str | None = None,
                  node_tls: ssl.SSLContext | bool = True) -> None:
    """Add the console and its endpoints to the registry API ``app``.

    :param app: the registry API.
    :param registry: its registry (for the live nodes).
    :param snapshots: the app's listing cache.
    :param require_token: the app's write-token dependency (guards repairs).
    :param node_token: the nodes' admin token (default ``None``: nodes have none).
    :param node_tls: what verifies the nodes' ``https://`` admin URLs (default: the
        system's roots).
    """
    app.mount(CONSOLE_PATH, StaticFiles(directory=STATIC_DIR), name="console")

    @app.get("/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/v1/kinds", response_model=KindList, responses=error_responses(503),
             summary="Resources per kind")
    async def get_kinds() -> KindList:
        snapshot = await snapshots.get()
        return KindList(revision=snapshot.revision, count=len(snapshot.items),
                        kinds=[KindCount(kind=k, count=n) for k, n in snapshot.kinds.items()])

    @app.post(
        "/v1/nodes/{name}/repair",
        summary="Ask one live node for a manual repair",
        description=("Forwards to the node's `POST /v1/repair` and answers with the node's "
                     "answer (202, the request accepted or coalesced). 404: no live node of "
                     "that name; 502: the node did not accept it."),
        responses={202: {"description": "the node accepted the repair request"},
                   **error_responses(401, 403, 404, 503)},
        status_code=202,
        dependencies=[Depends(require_token)],
    )
    async def repair_node(
        name: str = PathParam(min_length=1, max_length=NODE_NAME_MAX),
    ) -> JSONResponse:
        live = {n.name: n.admin_url for n in await live_nodes(registry)}
        admin_url = live.get(name)
        if admin_url is None:
            raise ApiError(404, "not_found", f"no live node named {name}")
        headers = {"Authorization": f"Bearer {node_token}"} if node_token else {}
        try:
            async with httpx.AsyncClient(timeout=REPAIR_REQUEST_TIMEOUT,
                                         verify=node_tls) as client:
                response = await client.post(f"{admin_url.rstrip('/')}/v1/repair",
                                             headers=headers)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ApiError(502, "node_unreachable",
                           f"node {name} at {admin_url}: {str(exc) or type(exc).__name__}"
                           ) from None
        if response.status_code >= 400 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            hint = ""
            if response.status_code in (401, 403):
                hint = (" (start serve with the nodes' token: --node-token or "
                        "SCHEMACACHE_NODE_TOKEN)" if node_token is None
                        else " (serve's --node-token is not this node's token)")
            raise ApiError(502, "node_refused",
                           f"node {name} answered {response.status_code}: "
                           f"{message or response.text[:200]}{hint}")
        return JSONResponse({"node": name, **body}, status_code=202)
