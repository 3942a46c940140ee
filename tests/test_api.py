"""HTTP contract of the registry API, against a real uvicorn server and a SQLite registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from factories import group, measure
from schemacache import Registry, open_registry
from schemacache.api.http import UvicornServer
from schemacache.api.server import DEFAULT_MAX_BODY, create_registry_app

TOKEN = "s3cret-token"


@dataclass
class Api:
    url: str
    registry: Registry
    client: httpx.AsyncClient


async def _serve(registry: Registry, token: str | None = None,
                 max_body: int = DEFAULT_MAX_BODY) -> UvicornServer:
    server = UvicornServer(create_registry_app(registry, token=token, max_body=max_body))
    await server.start()
    return server


@contextlib.asynccontextmanager
async def _running_api(tmp_path: Path, token: str | None = None) -> AsyncIterator[Api]:
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    server = await _serve(registry, token=token)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield Api(server.url, registry, client)
    finally:
        await server.stop()
        await registry.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with _running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Api]:
    async with _running_api(tmp_path, token=TOKEN) as running:
        yield running


@pytest.fixture
def examples_text(examples_dir: Path) -> Iterator[str]:
    yield "\n---\n".join(p.read_text() for p in sorted(examples_dir.glob("*.yaml")))


def _doc(resource: object) -> dict[str, object]:
    from schemacache import Resource

    assert isinstance(resource, Resource)
    return resource.to_dict()


def _assert_error(response: httpx.Response, status: int, error: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message"}
    assert body["message"]
    if error is not None:
        assert body["error"] == error


async def test_put_creates_then_updates_and_get_has_etag(api: Api) -> None:
    r = await api.client.put("/v1/schemas/group/sw_metric", json=_doc(group("sw_metric")))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"] == "group/sw_metric"
    r = await api.client.put("/v1/schemas/measure/sw_metric/cpm",
                             json=_doc(measure("sw_metric", "cpm")))
    assert r.status_code == 201
    r = await api.client.put("/v1/schemas/measure/sw_metric/cpm",
                             json=_doc(measure("sw_metric", "cpm", fields=("value", "total"))))
    assert r.status_code == 200
    updated = r.json()["revision"]
    assert updated > created["revision"]
    r = await api.client.get("/v1/schemas/measure/sw_metric/cpm")
    assert r.status_code == 200
    assert r.headers["etag"].strip('"') == str(updated)
    body = r.json()
    assert body["metadata"]["mod_revision"] == updated
    assert [f["name"] for f in body["spec"]["fields"]] == ["value", "total"]


async def test_list_filters_and_reports_revision(api: Api) -> None:
    await api.registry.put(group("g1"))
    await api.registry.put(group("g2"))
    await api.registry.put(measure("g1", "m1"))
    rev = await api.registry.put(measure("g2", "m2"))
    r = await api.client.get("/v1/schemas")
    assert r.status_code == 200
    assert r.json()["revision"] == rev
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["g1", "g2", "m1", "m2"]
    r = await api.client.get("/v1/schemas", params={"kind": "measure", "group": "g2"})
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["m2"]
    r = await api.client.get("/v1/schemas", params={"group": "g1"})
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["m1"]
    r = await api.client.get("/v1/schemas", params={"kind": "group", "group": "g1"})
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["g1"]


async def test_400_malformed_bodies_and_paths(api: Api) -> None:
    r = await api.client.put("/v1/schemas/group/g", content=b"{not json",
                             headers={"content-type": "application/json"})
    _assert_error(r, 400, "malformed")
    r = await api.client.put("/v1/schemas/group/g", content=b"kind: [unclosed")
    _assert_error(r, 400, "malformed")
    r = await api.client.put("/v1/schemas/group/other", json=_doc(group("g")))
    _assert_error(r, 400, "path_mismatch")
    r = await api.client.get("/v1/schemas/not/a/valid/key")
    _assert_error(r, 400)
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")),
                             headers={"If-Match": "abc"})
    _assert_error(r, 400)
    r = await api.client.post("/v1/apply", content=b"- a\n- : b: [")
    _assert_error(r, 400, "malformed")


async def test_404_missing(api: Api) -> None:
    r = await api.client.get("/v1/schemas/group/nope")
    _assert_error(r, 404, "not_found")
    r = await api.client.delete("/v1/schemas/measure/g/nope")
    _assert_error(r, 404, "not_found")


async def test_422_names_the_field(api: Api) -> None:
    doc = _doc(group("g"))
    doc["spec"] = {"catalog": "NOPE"}
    r = await api.client.put("/v1/schemas/group/g", json=doc)
    _assert_error(r, 422, "invalid")
    assert r.json()["field"].startswith("spec.catalog")
    r = await api.client.put("/v1/schemas/measure/missing/m",
                             json=_doc(measure("missing", "m")))
    _assert_error(r, 422, "invalid")
    assert r.json()["field"] == "metadata.group"
    bad = _doc(measure("g", "m"))
    bad["spec"]["entity"] = {"tag_names": ["undeclared"]}  # type: ignore[index]
    r = await api.client.post("/v1/apply", json=[_doc(group("g")), bad])
    _assert_error(r, 422, "invalid")
    assert r.json()["field"].startswith("spec.entity")


async def test_precondition_headers(api: Api) -> None:
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")),
                             headers={"If-None-Match": "*"})
    assert r.status_code == 201
    rev = r.json()["revision"]
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")),
                             headers={"If-None-Match": "*"})
    _assert_error(r, 412, "precondition_failed")
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")),
                             headers={"If-Match": str(rev + 100)})
    _assert_error(r, 412, "precondition_failed")
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")),
                             headers={"If-Match": f'"{rev}"'})
    assert r.status_code == 200
    new_rev = r.json()["revision"]
    r = await api.client.delete("/v1/schemas/group/g", headers={"If-Match": str(rev)})
    _assert_error(r, 412, "precondition_failed")
    r = await api.client.delete("/v1/schemas/group/g", headers={"If-Match": str(new_rev)})
    assert r.status_code == 200
    assert r.json()["revision"] > new_rev
    r = await api.client.get("/v1/schemas/group/g")
    assert r.status_code == 404


async def test_cas_race_one_wins_other_gets_412(api: Api) -> None:
    await api.client.put("/v1/schemas/group/g", json=_doc(group("g")))
    await api.client.put("/v1/schemas/measure/g/m", json=_doc(measure("g", "m")))
    etag = (await api.client.get("/v1/schemas/measure/g/m")).headers["etag"]
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as other:
        a, b = await asyncio.gather(
            api.client.put("/v1/schemas/measure/g/m", headers={"If-Match": etag},
                           json=_doc(measure("g", "m", fields=("a",)))),
            other.put("/v1/schemas/measure/g/m", headers={"If-Match": etag},
                      json=_doc(measure("g", "m", fields=("b",)))),
        )
    assert sorted([a.status_code, b.status_code]) == [200, 412], (a.text, b.text)
    winner = a if a.status_code == 200 else b
    current = (await api.client.get("/v1/schemas/measure/g/m")).json()
    assert current["metadata"]["mod_revision"] == winner.json()["revision"]


async def test_409_referenced_and_cascade(api: Api) -> None:
    await api.registry.put(group("g"))
    await api.registry.put(measure("g", "m"))
    r = await api.client.delete("/v1/schemas/group/g")
    _assert_error(r, 409, "referenced")
    assert "measure/g/m" in r.json()["message"]
    r = await api.client.delete("/v1/schemas/group/g", params={"cascade": "true"})
    assert r.status_code == 200
    items, _ = await api.registry.list()
    assert items == []


async def test_413_body_over_the_limit(api: Api) -> None:
    doc = _doc(group("g"))
    doc["spec"]["padding"] = "x" * DEFAULT_MAX_BODY  # type: ignore[index]
    r = await api.client.put("/v1/schemas/group/g", json=doc)
    _assert_error(r, 413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        # no Content-Length: the limit must hold on the streamed size too
        for _ in range(20):
            yield b" " * (DEFAULT_MAX_BODY // 16)

    r = await api.client.put("/v1/schemas/group/g", content=chunks())
    assert "content-length" not in r.request.headers
    _assert_error(r, 413, "too_large")
    r = await api.client.put("/v1/schemas/group/g", json=_doc(group("g")))
    assert r.status_code == 201


async def test_apply_has_a_larger_limit_of_its_own(tmp_path: Path) -> None:
    """A manifest over the 1 MiB document limit goes through /v1/apply in one
    request; over the apply limit, streamed or declared, it is refused with 413."""
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    limit = 4 * DEFAULT_MAX_BODY
    server = UvicornServer(create_registry_app(registry, max_apply_body=limit))
    await server.start()
    try:
        docs = [_doc(group("g")), *(_doc(measure("g", f"m{i}")) for i in range(4000))]
        body = json.dumps(docs).encode()
        assert DEFAULT_MAX_BODY < len(body) < limit
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            r = await client.post("/v1/apply", content=body)
            assert r.status_code == 200, r.text
            assert len(r.json()["results"]) == len(docs)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(5):
                    yield b" " * DEFAULT_MAX_BODY

            r = await client.post("/v1/apply", content=chunks())
            _assert_error(r, 413, "too_large")
            assert str(limit) in r.json()["message"]
    finally:
        await server.stop()
        await registry.close()


async def test_401_403_on_writes_reads_open(secured: Api) -> None:
    doc = _doc(group("g"))
    r = await secured.client.put("/v1/schemas/group/g", json=doc)
    _assert_error(r, 401, "unauthorized")
    r = await secured.client.put("/v1/schemas/group/g", json=doc,
                                 headers={"Authorization": "Bearer wrong"})
    _assert_error(r, 403, "forbidden")
    r = await secured.client.post("/v1/apply", json=[doc],
                                  headers={"Authorization": "Bearer wrong"})
    _assert_error(r, 403)
    r = await secured.client.delete("/v1/schemas/group/g")
    _assert_error(r, 401)
    r = await secured.client.put("/v1/schemas/group/g", json=doc,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201
    r = await secured.client.get("/v1/schemas/group/g")
    assert r.status_code == 200
    r = await secured.client.get("/v1/digest")
    assert r.status_code == 200


async def test_503_when_registry_unavailable(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    await registry.put(group("g"))
    server = await _serve(registry)
    try:
        await registry.close()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.get("/v1/schemas/group/g")
            _assert_error(r, 503, "unavailable")
            r = await client.get("/v1/digest")
            _assert_error(r, 503)
    finally:
        await server.stop()


async def test_apply_orders_and_reports_unchanged(api: Api, examples_text: str) -> None:
    r = await api.client.post("/v1/apply", content=examples_text.encode(),
                              headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    body = r.json()
    actions = {i["action"] for i in body["results"]}
    assert actions == {"created"}
    kinds = [i["key"].split("/")[0] for i in body["results"]]
    assert kinds.index("group") < kinds.index("measure")
    assert body["revision"] == await api.registry.revision()
    before = await api.registry.revision()
    r = await api.client.post("/v1/apply", content=examples_text.encode())
    assert {i["action"] for i in r.json()["results"]} == {"unchanged"}
    assert await api.registry.revision() == before
    assert r.json()["revision"] == before
    items, _ = await api.registry.list()
    assert len(items) == len(body["results"])


async def test_apply_json_list_updates(api: Api) -> None:
    r = await api.client.post("/v1/apply", json=[_doc(measure("g", "m")), _doc(group("g"))])
    assert r.status_code == 200, r.text
    assert [i["action"] for i in r.json()["results"]] == ["created", "created"]
    r = await api.client.post("/v1/apply", content=json.dumps(
        [_doc(group("g")), _doc(measure("g", "m", fields=("x",)))]))
    assert [(i["key"], i["action"]) for i in r.json()["results"]] == [
        ("group/g", "unchanged"), ("measure/g/m", "updated")]


async def test_digest_revision_nodes_cluster(api: Api) -> None:
    from schemacache.model import digest_of

    await api.registry.put(group("g"))
    rev = await api.registry.put(measure("g", "m"))
    r = await api.client.get("/v1/digest")
    items, _ = await api.registry.list()
    assert r.json() == {"digest": digest_of(items), "revision": rev, "count": 2}
    assert (await api.client.get("/v1/revision")).json() == {"revision": rev}
    lease = await api.registry.register_node("node-x", "http://127.0.0.1:9")
    try:
        r = await api.client.get("/v1/nodes")
        assert r.json() == {"nodes": [{"name": "node-x", "admin_url": "http://127.0.0.1:9"}]}
        r = await api.client.get("/v1/cluster")
        assert r.status_code == 200
        body = r.json()
        assert body["digest"] == digest_of(items)
        [node] = body["nodes"]
        assert node["name"] == "node-x" and node["status"] is None and node["error"]
    finally:
        await lease.revoke()


async def test_openapi_and_docs(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/v1/schemas/{key}", "/v1/schemas", "/v1/apply", "/v1/digest", "/v1/revision",
            "/v1/nodes", "/v1/cluster"} <= set(paths)
    assert "requestBody" in paths["/v1/schemas/{key}"]["put"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_apply_with_a_dangling_reference_writes_nothing(api: Api) -> None:
    r = await api.client.post("/v1/apply", json=[_doc(group("g")), _doc(measure("other", "m"))])
    _assert_error(r, 422, "invalid")
    assert r.json()["field"] == "metadata.group"
    assert "group/other" in r.json()["message"]
    assert await api.registry.revision() == 0


async def test_deeply_nested_bodies_are_400(api: Api) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = await api.client.post("/v1/apply", content=deep)
    _assert_error(r, 400, "malformed")
    nested = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    r = await api.client.put("/v1/schemas/group/g", content=nested)
    _assert_error(r, 400, "malformed")
