"""Registry outage under a running node, against a real etcd member.

The node keeps serving its cache while etcd is down, reports ``disconnected``,
fires ``SchemaRegistryUnreachable`` (to a real webhook receiver) after its
delay, and once etcd is back it catches up with no gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from etcd_server import EtcdCluster
from factories import group, measure
from node_procs.harness import wait_until
from schemacache import Registry, open_registry
from schemacache.model import digest_of
from schemacache.node import Node
from schemacache.testing import AlertReceiver

T = TypeVar("T")

UNREACHABLE_AFTER = 1.0
"""Seconds disconnected before the alert fires (the default is 30)."""
ALERT_SLACK = 0.2
"""Seconds the alert may seem early, from polling ``status()`` later than the node noticed."""
BEFORE_KILL = 40
"""Writes made by a second client right before etcd is killed."""
AFTER_RESTART = 30
OUTAGE_TIMEOUT = 20.0
CATCH_UP_TIMEOUT = 30.0
ALERT = "SchemaRegistryUnreachable"

pytestmark = pytest.mark.timeout(180)


async def _retrying(op: Callable[[], Awaitable[T]], timeout: float = CATCH_UP_TIMEOUT) -> T:  # noqa: ASYNC109
    """Run ``op`` until it succeeds: a client reconnects to a restarted etcd lazily."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await op()
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _registry_digest(reg: Registry) -> tuple[str, int, set[str]]:
    items, revision = await _retrying(reg.list)
    return digest_of(items), revision, {r.key for r in items}


async def test_registry_outage_serves_cache_alerts_and_catches_up(tmp_path: Path) -> None:
    """One etcd member, an in-process node with a webhook receiver on 127.0.0.1:0.

    - converge on 21 resources; then a second client writes 40 more and etcd is
      SIGKILLed right after the last write is acknowledged (the node may or
      may not have received them);
    - during the outage ``node.cache.get`` answers for every key converged
      before, ``status()["state"]`` becomes ``disconnected``, and
      ``SchemaRegistryUnreachable`` reaches the webhook no earlier than its
      delay (1 s here) after the node noticed, and exactly once while firing;
    - etcd restarts with the same data; 30 more writes follow; the node's
      digest then equals the registry's (the 40 writes before the kill and
      the 30 after are all applied: no gap), its state is ``ready`` again and
      the alert is resolved at the webhook.
    """
    receiver = AlertReceiver()
    await receiver.start()
    etcd = EtcdCluster()
    await asyncio.to_thread(etcd.start)
    url = etcd.url("outage")
    reg = open_registry(url)
    writer = open_registry(url)
    node = Node(reg, name="outage-node", state_dir=tmp_path / "state",
                alert_webhook=receiver.url, unreachable_alert_after=UNREACHABLE_AFTER,
                reconnect_base=0.1, reconnect_cap=0.5, monitor_interval=0.05,
                repair_interval=0)
    try:
        await node.start()
        await writer.put(group("g0"))
        for i in range(20):
            revision = await writer.put(measure("g0", f"m{i}"))
        assert await node.wait_for_revision(revision, 30)
        want, _, converged_keys = await _registry_digest(writer)
        assert node.status()["cache"]["digest"] == want

        for i in range(BEFORE_KILL):
            await writer.put(measure("g0", f"burst{i}"))
        await asyncio.to_thread(etcd.kill, 0)

        loop = asyncio.get_running_loop()

        async def disconnected() -> bool:
            return bool(node.status()["state"] == "disconnected")

        await wait_until(disconnected, OUTAGE_TIMEOUT, "state disconnected")
        noticed = loop.time()
        for key in converged_keys:
            cached = node.cache.get(key)
            assert cached is not None and cached.key == key
        assert node.status()["cache"]["size"] >= len(converged_keys)

        async def alerted() -> list[dict[str, Any]]:
            return receiver.matching(ALERT, resolved=False)

        firing = await wait_until(alerted, OUTAGE_TIMEOUT, f"{ALERT} at the webhook")
        assert firing[0]["_received"] - noticed >= UNREACHABLE_AFTER - ALERT_SLACK, (
            "the alert fired before its delay")
        assert firing[0]["labels"]["node"] == "outage-node"
        assert node.status()["state"] == "disconnected"
        for key in converged_keys:  # still serving after the alert
            assert node.cache.get(key) is not None

        await asyncio.to_thread(etcd.restart, 0)
        for i in range(AFTER_RESTART):
            await _retrying(lambda i=i: writer.put(measure("g0", f"after{i}")))  # type: ignore[misc]

        async def caught_up() -> bool:
            want, _, _ = await _registry_digest(writer)
            status = node.status()
            return bool(status["cache"]["digest"] == want and status["state"] == "ready")

        await wait_until(caught_up, CATCH_UP_TIMEOUT, "the node to catch up", interval=0.1)
        _, revision, keys = await _registry_digest(writer)
        assert len(keys) == 1 + 20 + BEFORE_KILL + AFTER_RESTART
        assert set(node.cache.keys()) == keys
        assert node.applied_revision == revision

        async def resolved() -> list[dict[str, Any]]:
            return receiver.matching(ALERT, resolved=True)

        await wait_until(resolved, CATCH_UP_TIMEOUT, f"{ALERT} resolved at the webhook")
        assert len(receiver.matching(ALERT, resolved=False)) == 1
    finally:
        await node.stop()
        await writer.close()
        await reg.close()
        await asyncio.to_thread(etcd.stop)
        await receiver.stop()
