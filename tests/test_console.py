"""The console's server side: its files, the paged listing, kind counts and the
repair request forwarded to a node; a real uvicorn server over a SQLite registry."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from factories import group, measure
from schemacache import Registry, open_registry
from schemacache.api.console import STATIC_DIR
from schemacache.api.http import UvicornServer
from schemacache.api.server import create_registry_app
from schemacache.model import digest_of

TOKEN = "write-token"
NODE_TOKEN = "node-admin-token"


@contextlib.asynccontextmanager
async def _api(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Registry, httpx.AsyncClient]]:
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    server = UvicornServer(create_registry_app(registry, **options))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield registry, client
    finally:
        await server.stop()
        await registry.close()


async def _fill(registry: Registry, groups: int, measures: int) -> list[str]:
    keys = []
    for g in range(groups):
        keys.append(f"group/g{g}")
        await registry.put(group(f"g{g}"))
        for m in range(measures):
            await registry.put(measure(f"g{g}", f"m{m:03d}"))
            keys.append(f"measure/g{g}/m{m:03d}")
    return sorted(keys)


async def _walk(client: httpx.AsyncClient, limit: int, **query: str) -> tuple[list[str], int]:
    """Every key of a paged listing, following ``continue``; and the total it announced."""
    keys: list[str] = []
    after: str | None = None
    totals = set()
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit, **query}
        if after is not None:
            params["continue"] = after
        r = await client.get("/v1/schemas", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        keys += [_key(item) for item in body["items"]]
        totals.add(body["total"])
        after = body.get("continue")
        if after is None:
            assert len(totals) == 1
            return keys, totals.pop()
    raise AssertionError("the listing never ended")


def _key(item: dict[str, Any]) -> str:
    meta = item["metadata"]
    if item["kind"] == "group":
        return f"group/{meta['name']}"
    return f"{item['kind']}/{meta['group']}/{meta['name']}"


async def test_console_is_served_with_nothing_from_elsewhere(tmp_path: Path) -> None:
    async with _api(tmp_path) as (_, client):
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/console/console.js"' in page.text
        for asset, media in (("console.js", "javascript"), ("console.css", "text/css")):
            r = await client.get(f"/console/{asset}")
            assert r.status_code == 200 and media in r.headers["content-type"], asset
        assert (await client.get("/console/nope.js")).json()["error"] == "not_found"
        assert (await client.get("/console/../server.py")).status_code == 404
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//|@import|url\(\s*['\"]?(https?:)?//",
                             text), f"{path.name} loads something from elsewhere"


async def test_paged_listing_returns_each_key_once_in_order(tmp_path: Path) -> None:
    async with _api(tmp_path) as (registry, client):
        keys = await _fill(registry, groups=3, measures=12)
        walked, total = await _walk(client, limit=5)
        assert walked == keys and total == len(keys)

        measures, total = await _walk(client, limit=7, kind="measure")
        assert measures == [k for k in keys if k.startswith("measure/")] and total == 36

        in_g1, total = await _walk(client, limit=4, kind="measure", group="g1")
        assert in_g1 == [f"measure/g1/m{m:03d}" for m in range(12)] and total == 12

        groups, total = await _walk(client, limit=2, group="g2")
        assert groups == [k for k in keys if k.startswith("measure/g2/")] and total == 12

        whole = (await client.get("/v1/schemas", params={"limit": 1000})).json()
        assert "continue" not in whole and whole["total"] == len(keys)
        unpaged = (await client.get("/v1/schemas")).json()
        assert set(unpaged) == {"items", "revision"}, "without limit the answer is unchanged"


async def test_paging_sees_writes_between_pages(tmp_path: Path) -> None:
    async with _api(tmp_path) as (registry, client):
        await _fill(registry, groups=1, measures=10)
        first = (await client.get("/v1/schemas", params={"kind": "measure", "limit": 4})).json()
        assert [_key(i) for i in first["items"]][-1] == "measure/g0/m003"
        await registry.put(measure("g0", "m009b"))
        await registry.delete("measure/g0/m005")
        rest, total = await _walk(client, limit=4, kind="measure",
                                  **{"continue": "measure/g0/m003"})
        assert rest == ["measure/g0/m004", "measure/g0/m006", "measure/g0/m007", "measure/g0/m008",
                        "measure/g0/m009", "measure/g0/m009b"]
        assert total == 10
        page = (await client.get("/v1/schemas", params={"kind": "measure", "limit": 4})).json()
        assert page["revision"] == await registry.revision() > first["revision"]


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-1"},
    {"limit": "5", "continue": "x" * 2000}, {"limit": "5", "kind": "Bad Kind!"},
])
async def test_paging_rejects_bad_parameters(tmp_path: Path, query: dict[str, str]) -> None:
    async with _api(tmp_path) as (_, client):
        r = await client.get("/v1/schemas", params=query)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "malformed"


async def test_continue_past_the_end_or_odd_is_an_empty_last_page(tmp_path: Path) -> None:
    async with _api(tmp_path) as (registry, client):
        await _fill(registry, groups=1, measures=3)
        for after in ("zzz", "measure/g0/m002", "\u00ff\u2603/../%00"):
            body = (await client.get("/v1/schemas",
                                     params={"kind": "measure", "limit": 5, "continue": after})
                    ).json()
            assert body["items"] == [] and "continue" not in body and body["total"] == 3


async def test_kinds_and_digest_follow_every_write(tmp_path: Path) -> None:
    async with _api(tmp_path) as (registry, client):
        assert (await client.get("/v1/kinds")).json()["kinds"] == []
        await _fill(registry, groups=2, measures=3)
        kinds = (await client.get("/v1/kinds")).json()
        assert kinds["kinds"] == [{"kind": "group", "count": 2}, {"kind": "measure", "count": 6}]
        assert kinds["count"] == 8 and kinds["revision"] == await registry.revision()
        for write in (registry.delete("measure/g1/m000"), registry.put(measure("g1", "x"))):
            await write
            items, revision = await registry.list()
            digest = (await client.get("/v1/digest")).json()
            assert digest == {"digest": digest_of(items), "revision": revision,
                              "count": len(items)}
            cluster = (await client.get("/v1/cluster")).json()
            assert (cluster["digest"], cluster["revision"]) == (digest_of(items), revision)
        assert (await client.get("/v1/kinds")).json()["kinds"][1] == {"kind": "measure",
                                                                      "count": 6}


class _AdminStandIn:
    """A node admin server on loopback that records the repair requests it gets.

    :param answer: the status it answers (default 202, accepted).
    :param token: the bearer token it requires (default none).
    """

    def __init__(self, answer: int = 202, token: str | None = None):
        self.requests: list[dict[str, str]] = []
        app = FastAPI()

        @app.post("/v1/repair")
        async def repair(request: Request) -> JSONResponse:
            self.requests.append(dict(request.headers))
            if token is not None and request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse({"error": "unauthorized", "message": "needs the token"},
                                    401)
            if answer >= 400:
                return JSONResponse({"error": "unavailable", "message": "the node is stopping"},
                                    answer)
            return JSONResponse({"reason": "manual", "accepted": True, "coalesced": False}, 202)

        self.server = UvicornServer(app)


async def test_repair_needs_the_token_and_carries_the_node_token(tmp_path: Path) -> None:
    admin = _AdminStandIn()
    url = await admin.server.start()
    try:
        async with _api(tmp_path, token=TOKEN, node_token=NODE_TOKEN) as (registry, client):
            lease = await registry.register_node("node-a", url, ttl=30)
            r = await client.post("/v1/nodes/node-a/repair")
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            r = await client.post("/v1/nodes/node-a/repair",
                                  headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 403
            assert admin.requests == [], "a refused request reaches no node"

            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = await client.post("/v1/nodes/node-a/repair", headers=auth)
            assert r.status_code == 202, r.text
            assert r.json() == {"node": "node-a", "reason": "manual", "accepted": True,
                                "coalesced": False}
            assert [h["authorization"] for h in admin.requests] == [f"Bearer {NODE_TOKEN}"]

            r = await client.post("/v1/nodes/node-b/repair", headers=auth)
            assert r.status_code == 404 and "node-b" in r.json()["message"]
            await lease.revoke()
            r = await client.post("/v1/nodes/node-a/repair", headers=auth)
            assert r.status_code == 404, "a node that left is not asked"
            assert len(admin.requests) == 1
    finally:
        await admin.server.stop()


async def test_repair_of_an_unreachable_or_refusing_node_says_so(tmp_path: Path) -> None:
    refusing = _AdminStandIn(answer=503)
    url = await refusing.server.start()
    gone = _AdminStandIn()
    gone_url = await gone.server.start()
    await gone.server.stop()
    try:
        async with _api(tmp_path) as (registry, client):
            await registry.register_node("refusing", url, ttl=30)
            await registry.register_node("gone", gone_url, ttl=30)
            r = await client.post("/v1/nodes/refusing/repair")
            assert r.status_code == 502
            assert r.json()["error"] == "node_refused"
            assert "503" in r.json()["message"] and "stopping" in r.json()["message"]
            assert [h.get("authorization") for h in refusing.requests] == [None]
            r = await client.post("/v1/nodes/gone/repair")
            assert r.status_code == 502 and r.json()["error"] == "node_unreachable"
            assert gone_url.removeprefix("http://") in r.json()["message"]
    finally:
        await refusing.server.stop()


async def test_accepted_connections_send_without_delay(tmp_path: Path) -> None:
    """Every answer on a kept-alive connection (the console polls on one) leaves at
    once: the server's accepted sockets have TCP_NODELAY, so no answer waits
    for the client's delayed ACK."""
    async with _api(tmp_path) as (_, client):
        assert (await client.get("/v1/revision")).status_code == 200
        server_port = client.base_url.port
        accepted = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(int(fd)))
                with sock:
                    if (sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET
                            and sock.getsockname()[1] == server_port):
                        with contextlib.suppress(OSError):
                            sock.getpeername()  # the accepted one, not the listener
                            accepted.append(
                                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        assert accepted and all(accepted), accepted


@pytest.mark.parametrize("node_token", [None, "not-the-nodes-token"])
async def test_repair_of_a_node_wanting_another_token_says_which_option(
        tmp_path: Path, node_token: str | None) -> None:
    guarded = _AdminStandIn(token=NODE_TOKEN)
    url = await guarded.server.start()
    try:
        async with _api(tmp_path, node_token=node_token) as (registry, client):
            await registry.register_node("guarded", url, ttl=30)
            r = await client.post("/v1/nodes/guarded/repair")
            assert r.status_code == 502 and r.json()["error"] == "node_refused"
            assert "answered 401" in r.json()["message"]
            assert "--node-token" in r.json()["message"]
    finally:
        await guarded.server.stop()
