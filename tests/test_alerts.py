"""Alerter against a real HTTP webhook receiver on a loopback port."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest

from schemacache.observe.alerts import (
    DEFAULT_RESEND_INTERVAL,
    ENDS_AT_RESENDS,
    SEVERITIES,
    Alerter,
    is_resolved,
)
from schemacache.observe.metrics import NodeMetrics
from schemacache.testing import AlertReceiver

DEADLINE = 10.0


async def wait_until(cond: Callable[[], bool], within: float = DEADLINE, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def receiver() -> AsyncIterator[AlertReceiver]:
    async with AlertReceiver() as rec:
        yield rec


def sent(metrics: NodeMetrics, alertname: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "schemacache_alerts_sent_total", {"alertname": alertname, "outcome": outcome})
    return value or 0.0


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_payload_is_alertmanager_v2_list(receiver: AlertReceiver) -> None:
    metrics = NodeMetrics()
    alerter = Alerter("n1", receiver.url, metrics=metrics)
    alerter.generator_url = "http://127.0.0.1:1234/v1/status"
    await alerter.start()
    try:
        alerter.fire("SchemaEventRetriesExhausted", key="measure/g/m", severity="critical",
                     summary="retries exhausted for measure/g/m", error="boom")
        await wait_until(lambda: len(receiver.posts) == 1)
        body = receiver.posts[0]
        assert isinstance(body, list) and len(body) == 1
        alert = body[0]
        assert alert["labels"] == {"alertname": "SchemaEventRetriesExhausted", "node": "n1",
                                   "key": "measure/g/m", "severity": "critical",
                                   "instance": "127.0.0.1:1234"}
        assert alert["annotations"] == {"summary": "retries exhausted for measure/g/m",
                                        "last_error": "boom"}
        assert parse_ts(alert["startsAt"]).tzinfo is not None
        # Firing: endsAt several re-send intervals ahead, so Alertmanager keeps it.
        margin = (parse_ts(alert["endsAt"]) - parse_ts(alert["startsAt"])).total_seconds()
        assert ENDS_AT_RESENDS * DEFAULT_RESEND_INTERVAL - 5 <= margin \
            <= ENDS_AT_RESENDS * DEFAULT_RESEND_INTERVAL + 5
        assert not is_resolved(alert)
        assert alert["generatorURL"] == "http://127.0.0.1:1234/v1/status"
        await wait_until(lambda: sent(metrics, "SchemaEventRetriesExhausted", "ok") == 1)
        active = alerter.active()
        assert [a["labels"]["key"] for a in active] == ["measure/g/m"]
        assert active[0]["startsAt"] == alert["startsAt"]
    finally:
        await alerter.close()


async def test_fire_is_deduplicated_and_updates_annotations(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    try:
        alerter.fire("SchemaRepairFailing", summary="first", error="e1")
        await wait_until(lambda: len(receiver.posts) == 1)
        alerter.fire("SchemaRepairFailing", summary="second", error="e2")
        # Delivery is FIFO: once the marker arrives, a second send would have too.
        alerter.fire("Marker")
        await wait_until(lambda: len(receiver.matching("Marker")) == 1)
        assert len(receiver.matching("SchemaRepairFailing")) == 1
        [active] = [a for a in alerter.active() if a["labels"]["alertname"] != "Marker"]
        assert active["annotations"] == {"summary": "second", "last_error": "e2"}
        # A different key is a different alert.
        alerter.fire("SchemaRepairFailing", key="group/g")
        await wait_until(lambda: len(receiver.matching("SchemaRepairFailing")) == 2)
    finally:
        await alerter.close()


async def test_firing_alert_is_resent_after_interval(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url, resend_interval=0.2)
    await alerter.start()
    try:
        t0 = time.monotonic()
        alerter.fire("SchemaCacheLagging", summary="lagging")
        await wait_until(lambda: len(receiver.matching()) >= 3, what="two re-sends")
        elapsed = time.monotonic() - t0
        alerts = receiver.matching()
        assert all(a["labels"]["alertname"] == "SchemaCacheLagging" for a in alerts)
        assert not receiver.matching(resolved=True)
        # Each re-send pushes endsAt on.
        ends = [parse_ts(a["endsAt"]) for a in alerts]
        assert ends == sorted(ends) and ends[0] < ends[-1]
        assert len({a["startsAt"] for a in alerts}) == 1  # the same alert, not new ones
        # Re-sends are paced by the interval, not a tight loop.
        assert elapsed >= 0.35
    finally:
        await alerter.close()


async def test_resolve_sends_ends_at_once(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    try:
        alerter.fire("SchemaEventRetriesExhausted", key="stream/g/s", error="boom")
        alerter.resolve("SchemaEventRetriesExhausted", key="stream/g/s")
        alerter.resolve("SchemaEventRetriesExhausted", key="stream/g/s")  # no longer firing
        alerter.resolve("SchemaRepairFailing")  # never fired
        alerter.fire("Marker")
        await wait_until(lambda: len(receiver.matching("Marker")) == 1)
        alerts = receiver.matching("SchemaEventRetriesExhausted")
        assert len(alerts) == 2
        firing, resolved = alerts
        assert not is_resolved(firing) and is_resolved(resolved)
        assert receiver.matching("SchemaEventRetriesExhausted", resolved=True) == [resolved]
        assert resolved["labels"] == firing["labels"]
        assert resolved["startsAt"] == firing["startsAt"]
        assert parse_ts(resolved["endsAt"]) >= parse_ts(resolved["startsAt"])
        assert receiver.matching("SchemaRepairFailing") == []
        assert [a["labels"]["alertname"] for a in alerter.active()] == ["Marker"]
        # Firing again after a resolve is a new alert, sent at once.
        alerter.fire("SchemaEventRetriesExhausted", key="stream/g/s")
        await wait_until(lambda: len(receiver.matching("SchemaEventRetriesExhausted")) == 3)
    finally:
        await alerter.close()


async def test_dead_webhook_never_blocks_and_counts_errors() -> None:
    metrics = NodeMetrics()
    url = f"http://127.0.0.1:{closed_port()}/alerts"
    alerter = Alerter("n1", url, metrics=metrics, timeout=0.5, retry_base=0.01)
    await alerter.start()
    try:
        t0 = time.perf_counter()
        for i in range(200):
            alerter.fire("SchemaEventRetriesExhausted", key=f"stream/g/s{i}", error="boom")
        assert time.perf_counter() - t0 < 0.5
        await wait_until(lambda: sent(metrics, "SchemaEventRetriesExhausted", "error") >= 1)
        assert sent(metrics, "SchemaEventRetriesExhausted", "ok") == 0
        assert len(alerter.active()) == 200  # state is kept although delivery fails
    finally:
        t0 = time.monotonic()
        await alerter.close()
        assert time.monotonic() - t0 < 5.0


async def test_failed_post_is_retried(receiver: AlertReceiver) -> None:
    metrics = NodeMetrics()
    receiver.fail_first = 2
    alerter = Alerter("n1", receiver.url, metrics=metrics, retry_base=0.01)
    await alerter.start()
    try:
        alerter.fire("SchemaRepairFailing")
        await wait_until(lambda: sent(metrics, "SchemaRepairFailing", "ok") == 1)
        assert receiver.requests == 3
        assert len(receiver.matching("SchemaRepairFailing")) == 1
        assert sent(metrics, "SchemaRepairFailing", "error") == 0
    finally:
        await alerter.close()


async def test_gives_up_after_delivery_attempts(receiver: AlertReceiver) -> None:
    metrics = NodeMetrics()
    receiver.fail_first = 100
    alerter = Alerter("n1", receiver.url, metrics=metrics, retry_base=0.01,
                      delivery_attempts=2)
    await alerter.start()
    try:
        alerter.fire("SchemaRepairFailing")
        await wait_until(lambda: sent(metrics, "SchemaRepairFailing", "error") == 1)
        assert receiver.requests == 2
    finally:
        await alerter.close()


async def test_alerts_fired_before_start_are_queued(receiver: AlertReceiver) -> None:
    metrics = NodeMetrics()
    alerter = Alerter("n1", receiver.url, metrics=metrics, queue_size=2)
    for i in range(5):
        alerter.fire("SchemaEventRetriesExhausted", key=f"k{i}")
    await alerter.start()
    try:
        await wait_until(lambda: sent(metrics, "SchemaEventRetriesExhausted", "ok") == 2)
        # The queue keeps the newest notifications and counts the dropped ones.
        assert [a["labels"]["key"] for a in receiver.matching()] == ["k3", "k4"]
        assert sent(metrics, "SchemaEventRetriesExhausted", "dropped") == 3
    finally:
        await alerter.close()


async def test_fire_from_another_thread(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    try:
        thread = threading.Thread(
            target=lambda: alerter.fire("SchemaRepairFailing", error="from a thread"))
        thread.start()
        await asyncio.to_thread(thread.join)
        await wait_until(lambda: len(receiver.matching("SchemaRepairFailing")) == 1)
    finally:
        await alerter.close()


async def test_close_delivers_pending_notifications(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    alerter.fire("SchemaRepairFailing")
    alerter.resolve("SchemaRepairFailing")
    await alerter.close()
    assert len(receiver.matching("SchemaRepairFailing")) == 2


async def test_logged_without_webhook(caplog: pytest.LogCaptureFixture) -> None:
    alerter = Alerter("n1")
    await alerter.start()
    try:
        with caplog.at_level(logging.INFO, logger="schemacache.observe.alerts"):
            alerter.fire("SchemaRegistryUnreachable", severity="critical",
                         summary="registry unreachable for 30 s", error="connection refused")
            alerter.fire("SchemaRegistryUnreachable", summary="again")  # deduplicated
            alerter.resolve("SchemaRegistryUnreachable")
        records = [(r.levelno, r.getMessage()) for r in caplog.records
                   if r.name == "schemacache.observe.alerts"]
        assert len(records) == 2
        (lvl1, msg1), (lvl2, msg2) = records
        assert lvl1 == logging.WARNING
        assert "SchemaRegistryUnreachable" in msg1 and "connection refused" in msg1
        assert "n1" in msg1
        assert lvl2 == logging.INFO and "resolved" in msg2
        assert alerter.active() == []
    finally:
        await alerter.close()


def test_fire_and_resolve_never_raise_without_loop() -> None:
    alerter = Alerter("n1", "http://127.0.0.1:9/alerts")
    alerter.fire("SchemaRepairFailing")
    alerter.resolve("SchemaRepairFailing")
    assert alerter.active() == []


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Alerter("n1", resend_interval=0)
    with pytest.raises(ValueError):
        Alerter("n1", queue_size=0)
    for url in ("ftp://127.0.0.1/x", "127.0.0.1:9093", "http://"):
        with pytest.raises(ValueError):
            Alerter("n1", url)


def test_resend_interval_leaves_alertmanager_margin() -> None:
    # Alertmanager's default resolve_timeout is 300 s; re-sends come well inside it
    # and endsAt reaches past several re-sends.
    assert DEFAULT_RESEND_INTERVAL * 2 <= 300
    assert ENDS_AT_RESENDS >= 3


async def test_severity_comes_from_the_table(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    try:
        for name in SEVERITIES:
            alerter.fire(name)
        alerter.fire("SomethingElse")
        await wait_until(lambda: len(receiver.received) == len(SEVERITIES) + 1)
        got = {a["labels"]["alertname"]: a["labels"]["severity"] for a in receiver.received}
        assert got == {**SEVERITIES, "SomethingElse": "warning"}
    finally:
        await alerter.close()


async def test_generator_url_set_later_relabels_sent_alerts(receiver: AlertReceiver) -> None:
    alerter = Alerter("n1", receiver.url)
    await alerter.start()
    try:
        alerter.fire("SchemaRepairFailing", summary="s")
        await wait_until(lambda: len(receiver.received) == 1)
        alerter.generator_url = "http://127.0.0.1:4321"
        await wait_until(lambda: len(receiver.received) == 3)
        first, ended, again = receiver.received
        assert "instance" not in first["labels"] and ended["labels"] == first["labels"]
        assert is_resolved(ended, at=ended["_received_at"])
        assert again["labels"] == {**first["labels"], "instance": "127.0.0.1:4321"}
        assert not is_resolved(again)
        alerter.resolve("SchemaRepairFailing")
        await wait_until(lambda: len(receiver.matching(resolved=True)) == 2)
        assert receiver.received[-1]["labels"]["instance"] == "127.0.0.1:4321"
    finally:
        await alerter.close()
