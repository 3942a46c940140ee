"""Hostile and careless input against a real ``schemacache serve`` on SQLite and etcd.

Every request here is one a user or an attacker could send.  The answer must
be a 4xx JSON error naming the field or header (never a 500), and a refused
request must leave the registry exactly as it was (same digest, same
revision).  Hypothesis drives the headers, integers, strings and datetimes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from factories import binding, group, index_rule, measure
from schemacache import ValidationError, load_resources
from schemacache.manifest import parse_manifest
from service_helpers import Proc, run_cli

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


class Server:
    """A ``schemacache serve`` subprocess and a client of it."""

    def __init__(self, registry_url: str, tmp: Path):
        self.registry_url = registry_url
        self.proc = Proc(["serve", "--registry", registry_url, "--listen", "127.0.0.1:0"],
                         cwd=tmp)
        self.url = self.proc.wait_url()
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def state(self) -> tuple[str, int]:
        body = self.http.get("/v1/digest").json()
        return body["digest"], body["revision"]

    def close(self) -> None:
        self.http.close()
        self.proc.stop()


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'registry.db'}"
    else:
        url = request.getfixturevalue("etcd_server").url(f"adv{uuid.uuid4().hex[:8]}")
    srv = Server(url, tmp)
    seed = [group("base"), measure("base", "m1"), index_rule("base", "r")]
    r = srv.http.post("/v1/apply", json=[res.to_dict() for res in seed])
    assert r.status_code == 200, r.text
    try:
        yield srv
    finally:
        srv.close()


def refused(server: Server, response: httpx.Response, before: tuple[str, int],
            status: int | None = None, field: str | None = None) -> dict[str, Any]:
    """Assert a clean 4xx JSON error and an unchanged registry; the error body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "message", "field"} and body["message"]
    if field is not None:
        assert body.get("field") == field, body
    assert server.state() == before
    return dict(body)


def group_doc(name: str = "base", **opts: Any) -> dict[str, Any]:
    doc = group(name).to_dict()
    doc["metadata"] = {"name": name}
    doc["spec"]["resource_opts"].update(opts)
    return doc


# ---------------------------------------------------------------- 1. headers

HEADER_TEXT = st.binary(min_size=1, max_size=24).filter(
    lambda b: all(0x20 <= c != 0x7F for c in b) and b.strip() == b)


@SETTINGS
@given(value=HEADER_TEXT)
@example(value="²".encode())
@example(value="¹".encode("latin-1"))
@example(value=b"\xb2")
@example(value=b"9" * 40)
@example(value=b'W/"-1"')
def test_if_match_takes_ascii_digits_only(server: Server, value: bytes) -> None:
    before = server.state()
    current = server.http.get("/v1/schemas/group/base").json()["metadata"]["mod_revision"]
    raw = value.strip().removeprefix(b"W/").strip(b'"')
    if raw == b"*" or (raw.isdigit() and len(raw) < 20 and int(raw) == current):
        return  # a correct precondition: not hostile
    doc = group_doc()
    for response in (
        server.http.put("/v1/schemas/group/base", json=doc, headers={"If-Match": value}),
        server.http.delete("/v1/schemas/group/base", headers={"If-Match": value}),
    ):
        body = refused(server, response, before)
        assert response.status_code in (400, 412), body
        if response.status_code == 400:
            assert body["field"] == "If-Match"


def test_delete_with_if_none_match_star_writes_nothing(server: Server) -> None:
    before = server.state()
    r = server.http.delete("/v1/schemas/index_rule/base/r", headers={"If-None-Match": "*"})
    refused(server, r, before, 412, field="If-None-Match")
    r = server.http.delete("/v1/schemas/index_rule/base/absent", headers={"If-None-Match": "*"})
    refused(server, r, before, 404)


# ---------------------------------------------------------------- 1. integers


# Integer literals as text: Python itself refuses to print ints over 4,300 digits.
LITERALS = st.builds(
    lambda sign, lead, fill, length: f"{sign}{lead}{str(fill) * length}",
    st.sampled_from(["", "-"]), st.integers(1, 9), st.integers(0, 9), st.integers(20, 6000),
)


@SETTINGS
@given(literal=LITERALS)
@example(literal="1" + "0" * 4999)
@example(literal="-" + "9" * 5000)
@example(literal=str(2**64))
@example(literal=str(-(2**63) - 1))
def test_huge_integers_are_422_naming_the_field(server: Server, literal: str) -> None:
    before = server.state()
    doc = group_doc(shard_num=12345)
    text = json.dumps(doc).replace("12345", literal)
    r = server.http.put("/v1/schemas/group/base", content=text)
    refused(server, r, before, 422, field="spec.resource_opts.shard_num")
    yaml_text = yaml.safe_dump(doc).replace("12345", literal)
    r = server.http.post("/v1/apply", content=yaml_text)
    body = refused(server, r, before, 422, field="spec.resource_opts.shard_num")
    assert "document 1" in body["message"]


# ---------------------------------------------------------------- 1. strings

TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)


@SETTINGS
@given(prefix=TEXT, suffix=TEXT, surrogate=st.integers(min_value=0xD800, max_value=0xDFFF))
def test_lone_surrogates_are_422_naming_the_field(server: Server, prefix: str, suffix: str,
                                                  surrogate: int) -> None:
    before = server.state()
    stage = {"name": "hot", "shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
             "ttl": {"unit": "DAY", "num": 7},
             "node_selector": prefix + chr(surrogate) + suffix}
    doc = group_doc("fresh", stages=[stage])
    body = json.dumps(doc)  # ensure_ascii: the surrogate travels as a \\u escape
    field = "spec.resource_opts.stages[0].node_selector"
    refused(server, server.http.put("/v1/schemas/group/fresh", content=body), before, 422,
            field=field)
    refused(server, server.http.post("/v1/apply", content=f"[{body}]"), before, 422,
            field=field)


@SETTINGS
@given(text=TEXT.filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_any_encodable_free_text_round_trips(server: Server, text: str) -> None:
    stage = {"name": "hot", "shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
             "ttl": {"unit": "DAY", "num": 7}, "node_selector": text}
    r = server.http.put("/v1/schemas/group/texts", json=group_doc("texts", stages=[stage]))
    assert r.status_code in (200, 201), r.text
    got = server.http.get("/v1/schemas/group/texts").json()
    assert got["spec"]["resource_opts"]["stages"][0].get("node_selector", "") == text


# ---------------------------------------------------------------- 1. datetimes

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                       timezones=st.none() | OFFSETS)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@SETTINGS
@given(begin=MOMENTS, expire=MOMENTS)
@example(begin=datetime(2024, 1, 1), expire=datetime(2024, 1, 1, 1, tzinfo=UTC))
@example(begin=datetime(1, 1, 2, 12, tzinfo=UTC),
         expire=datetime(9999, 12, 31, 20, tzinfo=timezone(timedelta(hours=-5))))
def test_binding_windows_compare_in_utc(server: Server, begin: datetime,
                                        expire: datetime) -> None:
    """Naive datetimes are UTC; a mix of naive and aware is compared, never a 500."""
    before = server.state()
    doc = binding("base", "w", ["r"], "m1").to_dict()
    doc["spec"] |= {"begin_at": begin.isoformat(), "expire_at": expire.isoformat()}
    r = server.http.put("/v1/schemas/index_rule_binding/base/w", json=doc)
    # Python compares aware datetimes as instants (without leaving their range).
    later = _aware(expire) > _aware(begin)
    if later:
        assert r.status_code in (200, 201), r.text
        assert server.http.delete("/v1/schemas/index_rule_binding/base/w").status_code == 200
    else:
        refused(server, r, before, 422, field="spec.expire_at")


# ---------------------------------------------------------------- 2. all or nothing


@SETTINGS
@given(position=st.integers(min_value=0, max_value=4))
def test_apply_with_a_catalog_change_anywhere_writes_nothing(server: Server,
                                                             position: int) -> None:
    before = server.state()
    docs = [group("n1").to_dict(), measure("n1", "a").to_dict(), group("n2").to_dict(),
            measure("base", "extra").to_dict()]
    catalog_change = group_doc()
    catalog_change["spec"]["catalog"] = "STREAM"
    docs.insert(position, catalog_change)
    r = server.http.post("/v1/apply", json=docs)
    body = refused(server, r, before, 422, field="spec.catalog")
    assert f"document {position + 1}" in body["message"]


def test_cascade_delete_over_http_is_whole(server: Server) -> None:
    docs = [group("doomed"), *(measure("doomed", f"m{i}") for i in range(20))]
    assert server.http.post("/v1/apply", json=[d.to_dict() for d in docs]).status_code == 200
    before = server.state()
    r = server.http.delete("/v1/schemas/group/doomed")
    refused(server, r, before, 409)
    r = server.http.delete("/v1/schemas/group/doomed", params={"cascade": "true"})
    assert r.status_code == 200, r.text
    listing = server.http.get("/v1/schemas", params={"group": "doomed"}).json()
    assert listing["items"] == []


# ---------------------------------------------------------------- 4. reads during writes


def test_reads_are_answered_while_a_large_apply_writes(server: Server) -> None:
    """A read issued during a large write is answered from the snapshot before it."""
    if not server.registry_url.startswith("sqlite"):
        pytest.skip("etcd serves reads itself; the SQLite registry is the one that could block")
    docs = [group("bulk").to_dict(), *(measure("bulk", f"m{i}").to_dict() for i in range(20000))]
    body = json.dumps(docs)
    _, before = server.state()
    done = threading.Event()
    result: list[httpx.Response] = []

    def write() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            result.append(client.post("/v1/apply", content=body))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    answered_during_write = []
    try:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            revision = server.http.get("/v1/revision").json()["revision"]
            if not done.is_set():
                answered_during_write.append((revision, time.monotonic() - started))
    finally:
        writer.join(120)
    assert result and result[0].status_code == 200, result
    after = result[0].json()["revision"]
    # One transaction: a read sees the revision before it or after it, nothing between.
    assert answered_during_write, "no read was answered while the apply was running"
    assert {rev for rev, _ in answered_during_write} <= {before, after}


async def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """Another connection holds the write lock; an apply waits for it, and
    every kind of read is answered meanwhile (WAL readers on their own connections)."""
    import asyncio

    from schemacache import open_registry

    db = tmp_path / "registry.db"
    registry = open_registry(f"sqlite:///{db}")
    try:
        await registry.apply([group("g"), measure("g", "m")])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            writing = asyncio.ensure_future(registry.apply([measure("g", "n")]))
            await asyncio.sleep(0)  # the apply is now waiting for the lock
            async with asyncio.timeout(10):
                assert (await registry.get("measure/g/m")).name == "m"
                items, revision = await registry.list()
                assert len(items) == 2 and await registry.revision() == revision
                assert await registry.list_nodes() == []
            assert not writing.done()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        async with asyncio.timeout(30):
            assert [r.outcome for r in await writing] == ["created"]
    finally:
        await registry.close()


# ---------------------------------------------------------------- 5. unavailable registry


def test_serve_refuses_a_registry_it_cannot_open(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the registry's directory should be")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    for path in (blocker / "registry.db", garbage, tmp_path):
        result = run_cli("serve", "--registry", f"sqlite:///{path}", "--listen", "127.0.0.1:0")
        assert result.returncode == 1, result.stdout + result.stderr
        assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_a_registry_that_breaks_while_serving_answers_503_without_paths(
    tmp_path: Path,
) -> None:
    db = tmp_path / "registry.db"
    srv = Server(f"sqlite:///{db}", tmp_path)
    try:
        assert srv.http.put("/v1/schemas/group/g", json=group_doc("g")).status_code == 201
        for suffix in ("", "-wal", "-shm"):
            target = Path(f"{db}{suffix}")
            if target.exists():
                target.write_bytes(b"\0garbage" * 4096)
        for method, path, kwargs in (
            ("GET", "/v1/schemas/group/g", {}),
            ("GET", "/v1/schemas", {}),
            ("PUT", "/v1/schemas/group/h", {"json": group_doc("h")}),
            ("POST", "/v1/apply", {"json": [group_doc("i")]}),
        ):
            r = srv.http.request(method, path, **kwargs)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert str(tmp_path) not in r.text and "registry.db" not in r.text
    finally:
        srv.close()


# ---------------------------------------------------------------- 7. manifests


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.one_of(st.text(max_size=5000), st.binary(max_size=2000)))
@example(text="kind: group " + "x" * 300)
@example(text="{" * 100000)
@example(text="a: &a [1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
              "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
              "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
@example(text="kind: group\nmetadata: {name: g}\nspec: {when: 2024-13-45}\n")
@example(text="? [a, b]\n: c\n")
@example(text="x: !!binary aGVsbG8=\n")
@example(text="x: .nan\n")
def test_parse_manifest_raises_only_validation_errors(text: str | bytes) -> None:
    try:
        parse_manifest(text)
    except ValidationError:
        pass


@pytest.mark.parametrize("length", [1, 255, 256, 300, 4095, 4096, 5000])
def test_load_resources_takes_a_path_and_never_guesses(length: int, tmp_path: Path) -> None:
    """One-line text of any length is a path that does not exist: ValidationError,
    never ``OSError: File name too long``."""
    text = "kind: group " + "x" * length
    with pytest.raises(ValidationError, match="cannot read"):
        load_resources(tmp_path / text[:length])
    with pytest.raises(ValidationError):
        load_resources(text)
    with pytest.raises(ValidationError):
        parse_manifest(text)


# ---------------------------------------------------------------- 6. node admin token

NODE_TOKEN = "node-s3cret"


def _node(tmp: Path, registry_url: str, *args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc(["node", "--registry", registry_url, "--name", f"n{uuid.uuid4().hex[:6]}",
                 "--state-dir", str(tmp / f"state-{uuid.uuid4().hex[:6]}"), *args], env=env)


def test_node_admin_token(server: Server, tmp_path: Path) -> None:
    """With a token, repair/cache/failures need it; probes and status stay open."""
    for how, args, env in (
        ("flag", ["--token", NODE_TOKEN], None),
        ("env", [], {"SCHEMACACHE_NODE_TOKEN": NODE_TOKEN}),
    ):
        node = _node(tmp_path, server.registry_url, "--listen", "127.0.0.1:0", *args, env=env)
        try:
            url = node.wait_url(marker="admin http")
            with httpx.Client(base_url=url, timeout=30) as http:
                for path in ("/metrics", "/healthz", "/v1/status"):
                    assert http.get(path).status_code == 200, (how, path)
                guarded = [("GET", "/v1/cache"), ("GET", "/v1/failures"),
                           ("POST", "/v1/repair")]
                for method, path in guarded:
                    r = http.request(method, path)
                    assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
                    assert r.headers["www-authenticate"] == "Bearer"
                    r = http.request(method, path, headers={"Authorization": "Bearer nope"})
                    assert r.status_code == 403, (how, path, r.text)
                    r = http.request(method, path,
                                     headers={"Authorization": f"Bearer {NODE_TOKEN}"})
                    assert r.status_code in (200, 202), (how, path, r.text)
        finally:
            node.stop()


def test_node_refuses_a_non_loopback_listen_without_a_token(server: Server,
                                                            tmp_path: Path) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        result = run_cli("node", "--registry", server.registry_url, "--state-dir",
                         str(tmp_path / "s"), "--listen", listen)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "non-loopback" in result.stderr and "--token" in result.stderr
    result = run_cli("node", "--registry", server.registry_url, "--state-dir",
                     str(tmp_path / "s"), "--listen", "0.0.0.0:0", "--token", "t",
                     "--token-file", str(tmp_path / "t"))
    assert result.returncode == 2 and "not both" in result.stderr


async def test_cluster_view_sends_the_node_token(tmp_path: Path) -> None:
    """serve's /v1/cluster (and so `status`) authenticates to the nodes: its own
    --node-token, or the one `status --node-token` sends."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from schemacache import open_registry
    from schemacache.api.http import UvicornServer
    from schemacache.api.server import create_registry_app
    from schemacache.client import RegistryClient

    seen: list[str | None] = []

    async def status(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({"applied_revision": 0})

    node_server = UvicornServer(Starlette(routes=[Route("/v1/status", status)]))
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    api = UvicornServer(create_registry_app(registry, node_token=NODE_TOKEN))
    try:
        lease = await registry.register_node("stub", await node_server.start())
        async with RegistryClient(await api.start()) as client:
            await client.cluster()
            await client.cluster(node_token="from-status")
        assert seen == [f"Bearer {NODE_TOKEN}", "Bearer from-status"]
        await lease.revoke()
    finally:
        await api.stop()
        await node_server.stop()
        await registry.close()
