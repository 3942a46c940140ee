"""The admin HTTP app's routing, served for real on a loopback port.

``FakeTarget`` stands in for a node only to exercise the HTTP layer; the node
itself is tested against this app elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemacache.api.admin import AdminTarget, create_admin_app
from schemacache.api.http import UvicornServer
from schemacache.model import Resource
from schemacache.observe.metrics import NodeMetrics


class FakeTarget:
    """A plain object implementing :class:`AdminTarget` with settable answers."""

    def __init__(self) -> None:
        self.name = "node-a"
        self.metrics = NodeMetrics()
        self.ready = False
        self.healthy = True
        self.repairs: list[str] = []
        self.broken = False
        self.stopped = False
        self.resources: list[Any] = []

    def status(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("status exploded")
        return {"node": self.name, "state": "ready" if self.ready else "syncing",
                "applied_revision": 7, "cache": {"size": len(self.resources), "digest": "ab"}}

    def failures(self) -> list[dict[str, Any]]:
        return [{"key": "stream/g/s", "revision": 5, "attempts": 5,
                 "first_failed": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                 "last_error": "boom"}]

    def cache_snapshot(self) -> dict[str, Any]:
        return {"applied_revision": 7, "resources": self.resources}

    def is_ready(self) -> bool:
        return self.ready

    def is_healthy(self) -> bool:
        return self.healthy

    async def repair(self, reason: str = "manual", wait: bool = True) -> dict[str, Any]:
        if self.stopped:
            raise RuntimeError("the node is not running")
        self.repairs.append(reason)
        if wait:
            return {"reason": reason, "outcome": "ok", "revision": 7}
        return {"reason": reason, "accepted": True, "coalesced": len(self.repairs) > 1}


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeTarget, httpx.AsyncClient]]:
    target = FakeTarget()
    server = UvicornServer(create_admin_app(target))
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
            yield target, client
    finally:
        await server.stop()


def test_fake_implements_protocol() -> None:
    assert isinstance(FakeTarget(), AdminTarget)


async def test_metrics(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    target.metrics.retries_exhausted.labels(kind="stream").inc(3)
    target.metrics.applied_revision.set(42)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    assert samples[("schemacache_retries_exhausted_total", (("kind", "stream"),))] == 3
    assert samples[("schemacache_applied_revision", ())] == 42


async def test_healthz(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    target.healthy = False
    r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["error"] == "unhealthy" and "node-a" in r.json()["message"]


async def test_readyz_after_initial_sync(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["error"] == "not_ready"
    target.ready = True
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_status(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.get("/v1/status")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == target.status()


async def test_failures_encode_datetimes(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    _, client = served
    r = await client.get("/v1/failures")
    assert r.status_code == 200
    [failure] = r.json()["failures"]
    assert failure["key"] == "stream/g/s" and failure["attempts"] == 5
    assert failure["first_failed"] == "2026-01-02T03:04:05+00:00"


async def test_cache_with_envelopes(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    group = Resource.parse({"kind": "group", "metadata": {"name": "g", "mod_revision": 3},
                            "spec": {"catalog": "STREAM", "resource_opts": {
                                "shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
                                "ttl": {"unit": "DAY", "num": 7}}}})
    # Both pydantic resources and plain dicts are accepted as envelopes.
    target.resources = [group, {"kind": "generic", "metadata": {"name": "x"}, "spec": {}}]
    r = await client.get("/v1/cache")
    assert r.status_code == 200
    body = r.json()
    assert body["applied_revision"] == 7
    assert body["resources"][0] == group.model_dump(mode="json")
    assert body["resources"][1]["kind"] == "generic"


async def test_repair_is_accepted(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.post("/v1/repair")
    assert r.status_code == 202
    assert r.json() == {"reason": "manual", "accepted": True, "coalesced": False}
    r = await client.post("/v1/repair")
    assert r.status_code == 202 and r.json()["coalesced"] is True
    assert target.repairs == ["manual", "manual"]


async def test_repair_wait_returns_result(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.post("/v1/repair", params={"wait": "true"})
    assert r.status_code == 200
    assert r.json() == {"reason": "manual", "outcome": "ok", "revision": 7}
    r = await client.post("/v1/repair", params={"wait": "maybe"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    target.stopped = True
    r = await client.post("/v1/repair")
    assert r.status_code == 503
    assert r.json() == {"error": "unavailable", "message": "the node is not running"}


async def test_json_errors(served: tuple[FakeTarget, httpx.AsyncClient]) -> None:
    target, client = served
    r = await client.get("/v1/nope")
    assert r.status_code == 404
    assert set(r.json()) == {"error", "message"} and r.json()["error"] == "not_found"
    r = await client.get("/v1/repair")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    target.broken = True
    r = await client.get("/v1/status")
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "RuntimeError: status exploded"}
