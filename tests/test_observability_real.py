"""The alert path and the dashboard against a real Prometheus and a real
Alertmanager (Debian's packages, installed by ``scripts/install-promtool.sh``),
each started on a free loopback port and stopped by PID.

Two real nodes fail on one key each: ``loud`` delivers its own alerts to
Alertmanager, ``mute`` has no webhook.  What is checked is what an operator
gets: every metric README lists is in Prometheus from the first scrape on; the
loud node's alert goes through the shipped routing to a webhook receiver and
resolves, and the shipped rule for it stays quiet (one failure pages once);
for the mute node the shipped rule fires and pages instead, and resolves; every
dashboard panel's query returns data and its legend names every label of its
series.  The rules run from a test copy with short ``for:`` durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from factories import group, measure
from polling import until as poll_until
from schemacache import Node, RetryPolicy, open_registry
from schemacache.api.admin import create_admin_app
from schemacache.api.http import UvicornServer
from schemacache.testing import AlertReceiver, FaultyHandler

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "schemacache.json"
README = ROOT / "README.md"
HOST = "127.0.0.1"
DEADLINE = 40.0
ALERT = "SchemaEventRetriesExhausted"
SCRAPE = "1s"
RULE_FOR = "3s"
"""``for:`` of every rule in the test copy: three scrapes."""


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run scripts/install-promtool.sh")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Daemon:
    """A server subprocess in its own session, output in a log file."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def start_alertmanager(tmp: Path, receiver_url: str, daemons: list[Daemon]) -> str:
    """The shipped routing and inhibit rules, with the receivers pointed at the
    test's webhook receiver and group timings shortened."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            webhook["url"] = f"{receiver_url}?to={receiver['name']}"
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    daemon = Daemon([binary("prometheus-alertmanager"), f"--config.file={path}",
                     f"--storage.path={tmp / 'am-data'}", f"--web.listen-address={HOST}:{port}",
                     "--cluster.listen-address=", "--log.level=warn"], tmp / "alertmanager.log")
    daemons.append(daemon)
    url = f"http://{HOST}:{port}"
    daemon.wait_ready(f"{url}/-/ready")
    return url


def start_prometheus(tmp: Path, targets: list[str], alertmanager: str,
                     daemons: list[Daemon]) -> str:
    """The shipped rules (``for:`` shortened to :data:`RULE_FOR`) over the nodes' metrics."""
    rules = yaml.safe_load(RULES.read_text())
    for rule_group in rules["groups"]:
        for rule in rule_group["rules"]:
            if "for" in rule:
                rule["for"] = RULE_FOR
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(tmp / "rules.yml")],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "schemacache", "static_configs": [
            {"targets": targets}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    daemon = Daemon([binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                     f"--storage.tsdb.path={tmp / 'prom-data'}",
                     f"--web.listen-address={HOST}:{port}", "--rules.alert.resend-delay=1s",
                     "--log.level=warn"], tmp / "prometheus.log")
    daemons.append(daemon)
    url = f"http://{HOST}:{port}"
    daemon.wait_ready(f"{url}/-/ready")
    return url


class Prometheus:
    def __init__(self, url: str):
        self.client = httpx.AsyncClient(base_url=url, timeout=5.0)

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        response = await self.client.get("/api/v1/query", params=params)
        assert response.status_code == 200, (expr, response.text)
        return list(response.json()["data"]["result"])

    async def alerts(self) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/alerts")
        return list(response.json()["data"]["alerts"])


async def until(check: Callable[[], Any], what: str) -> Any:
    return await poll_until(check, what, DEADLINE, interval=0.2)


def readme_metrics() -> list[str]:
    """The series names README lists under "Metrics and alerts"."""
    section = README.read_text().split("## Metrics and alerts", 1)[1].split("\n## ", 1)[0]
    listed = section.split("Alerts are always logged", 1)[0]
    names = sorted(set(re.findall(r"`(schemacache_[a-z_]+)", listed)))
    assert len(names) >= 20, names
    return names


def notified(receiver: AlertReceiver) -> list[tuple[str, str, dict[str, str]]]:
    """Every alert Alertmanager notified: (receiver, status, labels)."""
    return [(message.get("receiver", ""), alert["status"], alert["labels"])
            for message in receiver.received for alert in message.get("alerts", [])]


async def check_inhibition(alertmanager: str) -> None:
    """The shipped inhibit rule: a node's own alert suppresses the rule alert of
    the same name for the same instance, and nothing else."""
    def alert(instance: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": ALERT, "severity": "warning", "instance": instance,
                           **labels}}

    posted = [alert("inhibit-a:1", node="a", key="k"), alert("inhibit-a:1", job="schemacache"),
              alert("inhibit-b:1", job="schemacache")]
    async with httpx.AsyncClient(base_url=alertmanager, timeout=5.0) as client:
        assert (await client.post("/api/v2/alerts", json=posted)).status_code == 200

        async def states() -> dict[tuple[str, bool], str] | None:
            found = (await client.get("/api/v2/alerts")).json()
            got = {(a["labels"]["instance"], "node" in a["labels"]): a["status"]["state"]
                   for a in found if a["labels"]["instance"].startswith("inhibit-")}
            return got if len(got) == 3 and "unprocessed" not in got.values() else None

        got = await until(states, "Alertmanager to process the alerts")
        assert got == {("inhibit-a:1", True): "active", ("inhibit-a:1", False): "suppressed",
                       ("inhibit-b:1", False): "active"}
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await client.post("/api/v2/alerts", json=[{**a, "endsAt": ended} for a in posted])


async def start_node(name: str, tmp: Path, registry: Any, faults: Path,
                     webhook: str | None) -> tuple[Node, UvicornServer]:
    node = Node(registry, name=name, state_dir=tmp / name, handler=FaultyHandler(faults),
                retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02),
                repair_backoff_base=60.0, repair_interval=0, alert_webhook=webhook,
                alert_resend_interval=2.0, monitor_interval=0.2)
    await node.start()
    server = UvicornServer(create_admin_app(node), f"{HOST}:0")
    url = await server.start()
    node.alerter.generator_url = url
    await node.ready(DEADLINE)
    return node, server


async def test_alerts_rules_metrics_and_dashboard_on_real_prometheus_and_alertmanager(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"fail": {"measure/g/bad-*": "disk full"}}))
    registry = open_registry("memory://")
    await registry.put(group("g"))
    await registry.put(measure("g", "ok"))
    pages = AlertReceiver()
    await pages.start()
    nodes: list[tuple[Node, UvicornServer]] = []
    prometheus: Prometheus | None = None
    try:
        alertmanager = start_alertmanager(tmp_path, pages.url, daemons)
        await check_inhibition(alertmanager)
        nodes.append(await start_node("loud", tmp_path, registry, faults,
                                      f"{alertmanager}/api/v2/alerts"))
        nodes.append(await start_node("mute", tmp_path, registry, faults, None))
        (loud, loud_http), (mute, mute_http) = nodes
        loud_target = loud_http.url.removeprefix("http://").rstrip("/")
        mute_target = mute_http.url.removeprefix("http://").rstrip("/")
        prometheus = Prometheus(start_prometheus(tmp_path, [loud_target, mute_target],
                                                 alertmanager, daemons))
        prom = prometheus

        # -- every metric README lists, from the first scrape on ----------------
        async def first_scrape() -> float | None:
            result = await prom.query(f'up{{instance="{loud_target}"}}[1h]')
            return min(float(t) for t, _ in result[0]["values"]) if result else None

        first = await until(first_scrape, "the first scrape")
        for name in readme_metrics():
            series = name + "_count" if name.endswith("_seconds") and name not in (
                "schemacache_queue_longest_running_seconds",
                "schemacache_last_repair_success_timestamp_seconds") else name
            found = await prom.query(f'{series}{{instance="{loud_target}"}}', at=first)
            assert found, f"{series} missing from the first scrape"
        for labelled in ('schemacache_retries_exhausted_total{kind="measure"}',
                         'schemacache_watch_restarts_total{reason="error"}',
                         f'schemacache_alerts_sent_total{{alertname="{ALERT}",outcome="ok"}}'):
            found = await prom.query(f'{labelled[:-1]},instance="{loud_target}"}}', at=first)
            assert [s["value"][1] for s in found] == ["0"], labelled

        # -- one failing key on each node ---------------------------------------
        await registry.put(measure("g", "bad-1"))
        await until(lambda: loud.failures() and mute.failures(), "both nodes to record it")

        def loud_paged() -> list[Any]:
            return [n for n in notified(pages)
                    if n[2].get("node") == "loud" and n[2]["alertname"] == ALERT
                    and n[1] == "firing"]

        [(receiver, _, labels)] = (await until(loud_paged, "the loud node's page"))[:1]
        assert receiver == "schema-tickets"  # severity warning routes to tickets
        assert labels["key"] == "measure/g/bad-1" and labels["instance"] == loud_target

        async def rule_firing_for(target: str) -> bool:
            return any(a["labels"]["alertname"] == ALERT and a["state"] == "firing"
                       and a["labels"]["instance"] == target for a in await prom.alerts())

        def mute_paged() -> list[Any]:
            return [n for n in notified(pages)
                    if n[2].get("instance") == mute_target and n[1] == "firing"]

        await until(lambda: rule_firing_for(mute_target), "the shipped rule for the mute node")
        [(receiver, _, labels)] = (await until(mute_paged, "the mute node's page"))[:1]
        assert receiver == "schema-tickets" and "node" not in labels
        assert labels["severity"] == "warning" and labels["job"] == "schemacache"

        # -- every dashboard panel returns data, its legend names its labels ----
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                result = await until(lambda t=target: prom.query(t["expr"]),
                                     f"data for panel {panel['title']!r}")
                legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
                for series in result:
                    hidden = set(series["metric"]) - {"job", "__name__"} - legend
                    assert not hidden, f"panel {panel['title']!r} legend hides {hidden}"
        # Zero-initialised counters: increase() counts the first exhaustion.
        exhausted = await prom.query(
            f'sum by (instance, kind) (increase(schemacache_retries_exhausted_total'
            f'{{instance="{loud_target}",kind="measure"}}[1h]))')
        assert float(exhausted[0]["value"][1]) >= 0.9, exhausted

        # -- the fault clears: everything resolves --------------------------------
        faults.write_text(json.dumps({}))
        await loud.repair()
        await mute.repair()
        assert not loud.failures() and not mute.failures()

        def resolved(match: Callable[[dict[str, str]], bool]) -> bool:
            return any(status == "resolved" and match(labels)
                       for _, status, labels in notified(pages))

        await until(lambda: resolved(lambda lb: lb.get("node") == "loud"),
                    "the loud node's alert to resolve")
        await until(lambda: resolved(lambda lb: lb.get("instance") == mute_target),
                    "the mute node's rule alert to resolve")
        await asyncio.sleep(2.0)  # a few more rule evaluations and group flushes
        # One failure paged once: the rule never paged for the node that
        # delivered its own alert, and the shipped rule never fired for it.
        rule_pages_for_loud = [n for n in notified(pages)
                               if n[2].get("instance") == loud_target and "node" not in n[2]]
        assert rule_pages_for_loud == []
        # (It may go pending for a scrape that sees the failed key before the
        # node's delivery is counted; `for:` outlasts that.)
        assert not await prom.query(
            f'ALERTS{{alertname="{ALERT}",alertstate="firing",instance="{loud_target}"}}[1h]')
    finally:
        if prometheus is not None:
            await prometheus.client.aclose()
        for node, server in nodes:
            await server.stop()
            await node.stop()
        await pages.stop()
        await registry.close()
