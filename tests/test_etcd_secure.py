"""The registry over ``etcds://``: TLS, client certificates, and RBAC users whose
role covers only their prefix, with auth tokens expiring every
:data:`conftest.TOKEN_TTL` seconds.

The registry contract suite runs here again, unchanged, over that etcd; the
tests below add what only a secured etcd has: tokens that expire under running
calls, an open watch and a lease; a node end to end; a member SIGKILLed in a
3-member TLS cluster; a node whose credentials are refused (an alert, no crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aetcd import rpc

from conftest import TOKEN_TTL, secure_cluster
from factories import group, measure
from schemacache import (
    Event,
    Registry,
    RegistryPermissionError,
    RegistryUnavailableError,
    open_registry,
)
from schemacache.model import digest_of
from schemacache.node import Node, RetryPolicy
from schemacache.testing import FaultyHandler
from test_registry_contract import *  # noqa: F403  (the contract suite, collected again here)
from test_registry_contract import collect

pytestmark = pytest.mark.etcd

DEADLINE = 30.0
"""Seconds any awaited condition may take on a loaded machine."""
SIMPLE_TOKEN_TTL = 1
"""``--auth-token-ttl`` of the cluster with etcd's default (simple) tokens."""


@pytest.fixture
def backend() -> str:
    """Every contract test of the suite imported above runs over ``etcds://``."""
    return "etcds"


async def until(cond: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def token_expired(reg: Registry) -> None:
    """Wait until etcd rejects the auth token ``reg`` holds now (its calls and
    watches use it until etcd says it is no longer valid)."""
    conn = reg._client  # type: ignore[attr-defined]
    used = conn.metadata
    assert used, "the registry holds no auth token"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            await conn.kvstub.Range(rpc.RangeRequest(key=b"/", count_only=True),
                                    metadata=used, timeout=2)
        except grpc.aio.AioRpcError as exc:
            if "invalid auth token" in (exc.details() or ""):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"token not expired after {DEADLINE}s (TTL {TOKEN_TTL}s)")


def password_of(url: str, replace_with: str | None = None) -> str:
    """The password in the URL's ``password_file``; optionally write another there."""
    path = Path(url.rsplit("password_file=", 1)[1])
    password = path.read_text().strip()
    if replace_with is not None:
        path.write_text(replace_with + "\n")
    return password


async def test_contract_backend_is_secured(registry: Registry) -> None:
    url = registry.url  # type: ignore[attr-defined]
    assert url.startswith("etcds://u-sec-t") and "@127.0.0.1:" in url
    await registry.put(group("g"))
    assert registry._client.metadata[0][0] == "token"  # type: ignore[attr-defined]


async def test_tokens_expire_under_calls_an_open_watch_and_a_lease(secure_etcd: Any) -> None:
    reg = open_registry(secure_etcd.rbac_url(f"sec/x{uuid.uuid4().hex[:8]}"))
    events: list[Event] = []
    try:
        start = await reg.put(group("g1"))
        lease = await reg.register_node("n1", "https://127.0.0.1:1", ttl=4)

        async def follow() -> None:
            async for ev in reg.watch("", start_revision=start):
                events.append(ev)

        watcher = asyncio.create_task(follow())
        await until(lambda: len(events) == 1, "the first event")
        await token_expired(reg)

        # every kind of call goes on with a new token, unnoticed by the caller
        rev2 = await reg.put(group("g2"))
        await lease.refresh()
        assert [n.name for n in await reg.list_nodes()] == ["n1"]
        await until(lambda: len(events) == 2, "the event written after the token expired")
        assert [(e.key, e.revision) for e in events] == [("group/g1", start), ("group/g2", rev2)]
        assert reg._client.renewals == 1  # type: ignore[attr-defined]

        # a watch created with an expired token is refused by etcd, then renewed
        await token_expired(reg)
        replay = await collect(reg, start, 2)
        assert [(e.key, e.revision) for e in replay] == [(e.key, e.revision) for e in events]
        assert reg._client.renewals == 2  # type: ignore[attr-defined]
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        await reg.close()


async def put_retrying(reg: Registry, resource: Any) -> int:
    """``put``, retried while the registry is unavailable (a member restarting)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await reg.put(resource)
        except RegistryUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_watch_outlives_expired_tokens_and_member_restarts(secure_etcd: Any) -> None:
    reg = open_registry(secure_etcd.rbac_url(f"sec/r{uuid.uuid4().hex[:8]}"))
    events: list[Event] = []
    try:
        written = [await reg.put(group("g0"))]

        async def follow() -> None:
            async for ev in reg.watch("", start_revision=written[0]):
                events.append(ev)

        watcher = asyncio.create_task(follow())
        for i in (1, 2):
            await until(lambda: len(events) == len(written), "the events so far")
            await token_expired(reg)
            # the open watch breaks and is re-created with its expired token
            await asyncio.to_thread(secure_etcd.restart, 0)
            written.append(await put_retrying(reg, group(f"g{i}")))
        await until(lambda: len(events) == 3, "every event")
        assert [(e.key, e.revision) for e in events] == [
            (f"group/g{i}", rev) for i, rev in enumerate(written)]
        assert not watcher.done()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        await reg.close()


async def test_node_end_to_end_across_token_expiry(secure_etcd: Any, tmp_path: Path) -> None:
    url = secure_etcd.rbac_url(f"sec/n{uuid.uuid4().hex[:8]}")
    password = password_of(url)
    reg = open_registry(url)
    handler = FaultyHandler()
    try:
        async with Node(reg, name="n1", state_dir=tmp_path / "n1", handler=handler,
                        retry=RetryPolicy(base=0.01, cap=0.05)) as node:
            await reg.put(group("g"))
            rev = await reg.put(measure("g", "m1"))
            assert await node.wait_for_revision(rev, timeout=DEADLINE)
            await token_expired(reg)
            rev = await reg.put(measure("g", "m2"))
            await reg.delete("measure/g/m1")
            rev = await reg.put(measure("g", "m3"))
            assert await node.wait_for_revision(rev, timeout=DEADLINE)
            items, _ = await reg.list()
            assert handler.applied == {r.key: r.mod_revision for r in items}
            assert handler.deleted == ["measure/g/m1"]
            status = node.status()
            assert status["cache"]["digest"] == digest_of(items)
            assert password not in json.dumps(status, default=str)
            assert node.alerter.active() == []
    finally:
        await reg.close()


async def test_refused_credentials_alert_with_the_reason_then_recover(
        secure_etcd: Any, tmp_path: Path) -> None:
    url = secure_etcd.rbac_url(f"sec/a{uuid.uuid4().hex[:8]}")
    wrong = f"stale-{uuid.uuid4().hex}"
    password = password_of(url, replace_with=wrong)
    reg = open_registry(url)
    try:
        async with Node(reg, name="n1", state_dir=tmp_path / "n1", handler=FaultyHandler(),
                        unreachable_alert_after=0.5, monitor_interval=0.2) as node:
            def alert() -> dict[str, Any] | None:
                return next((a for a in node.alerter.active()
                             if a["labels"]["alertname"] == "SchemaRegistryUnreachable"), None)

            await until(lambda: alert() is not None, "SchemaRegistryUnreachable")
            text = json.dumps(alert())
            assert "authentication failed for user" in text and "127.0.0.1:" in text
            assert wrong not in text and password not in text
            # the node keeps running; once the password is right it connects
            password_of(url, replace_with=password)
            rev = await reg.put(group("g"))
            assert await node.wait_for_revision(rev, timeout=DEADLINE)
            await until(lambda: alert() is None, "the alert to resolve")
    finally:
        await reg.close()


async def test_member_sigkill_in_a_three_member_tls_cluster(secure_pki: Any) -> None:
    cluster = secure_cluster(secure_pki, size=3)
    await asyncio.to_thread(cluster.start)
    try:
        cluster.enable_auth(uuid.uuid4().hex)
        reg = open_registry(cluster.rbac_url("sec/k"))
        events: list[Event] = []

        async def follow() -> None:
            async for ev in reg.watch("", start_revision=1):
                events.append(ev)

        watcher = asyncio.create_task(follow())
        revisions = {}
        for i in range(5):
            revisions[f"group/g{i}"] = await reg.put(group(f"g{i}"))
        await until(lambda: len(events) == 5, "the events before the kill")
        cluster.kill(0)  # the member the channel picked first
        await token_expired(reg)
        for i in range(5, 10):
            revisions[f"group/g{i}"] = await put_retrying(reg, group(f"g{i}"))
        items, _ = await reg.list()
        final = {r.key: r.mod_revision for r in items}
        assert set(final) == {f"group/g{i}" for i in range(10)}
        await until(lambda: bool(events) and events[-1].revision >= max(final.values()),
                    "the watch to catch up after the failover")
        seen = [e.revision for e in events]
        assert seen == sorted(set(seen)), "the watch repeated or reordered events"
        assert {e.key: e.revision for e in events} == final
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await reg.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_a_read_only_role_reads_and_says_what_a_write_lacks(secure_etcd: Any) -> None:
    prefix = f"sec/ro{uuid.uuid4().hex[:8]}"
    writer = open_registry(secure_etcd.rbac_url(prefix))
    user, password = f"reader-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    secure_etcd.add_user(user, password, prefix, permission="READ")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SCHEMACACHE_ETCD_PASSWORD", password)
        reader = open_registry(secure_etcd.url(prefix, user=user))
    try:
        rev = await writer.put(group("g"))
        assert (await reader.get("group/g")).mod_revision == rev
        with pytest.raises(RegistryPermissionError) as err:
            await reader.put(group("h"))
        message = str(err.value)
        assert f"user '{user}' needs a role with readwrite on /{prefix}/" in message
        assert "127.0.0.1:" in message and password not in message
        # etcd 3.5 lets any authenticated user compact (the whole keyspace)
        await writer.compact(rev)
    finally:
        await reader.close()
        await writer.close()


async def test_plain_etcd_with_a_user_and_simple_tokens(tmp_path: Path) -> None:
    """``etcd://user@…`` (no TLS) against etcd's default simple tokens, which expire
    after ``--auth-token-ttl`` idle seconds."""
    from etcd_server import EtcdCluster

    cluster = EtcdCluster(extra_args=("--auth-token-ttl", str(SIMPLE_TOKEN_TTL)))
    await asyncio.to_thread(cluster.start)
    try:
        cluster.enable_auth(uuid.uuid4().hex)
        password = uuid.uuid4().hex
        cluster.add_user("plain-app", password, "p")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SCHEMACACHE_ETCD_PASSWORD", password)
            reg = open_registry(cluster.url("p").replace("etcd://", "etcd://plain-app@"))
        assert reg.url.startswith("etcd://plain-app@")  # type: ignore[attr-defined]
        first = await reg.put(group("g1"))
        # Any use of a simple token extends it, so no polling here: the wait is
        # the condition itself, the token left idle for three TTLs.
        await asyncio.sleep(3 * SIMPLE_TOKEN_TTL)
        assert (await reg.get("group/g1")).mod_revision == first
        assert reg._client.renewals == 1  # type: ignore[attr-defined]
        await asyncio.sleep(3 * SIMPLE_TOKEN_TTL)
        second = await reg.put(group("g2"))
        assert reg._client.renewals == 2  # type: ignore[attr-defined]
        assert [e.key for e in await collect(reg, first, 2)] == ["group/g1", "group/g2"]
        assert second > first
        await reg.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_an_untrusted_server_is_a_tls_error(secure_etcd: Any, tmp_path: Path) -> None:
    from pki import Pki
    from schemacache import RegistryTlsError

    stranger = await asyncio.to_thread(Pki, tmp_path / "stranger")
    url = secure_etcd.rbac_url(f"sec/tls{uuid.uuid4().hex[:6]}")
    reg = open_registry(url.replace(f"ca={secure_etcd.tls.ca}", f"ca={stranger.ca}"))
    try:
        with pytest.raises(RegistryTlsError, match=r"TLS: the server's certificate is not"):
            await reg.revision()
    finally:
        await reg.close()
