"""Every labelled series a node can produce exists at 0 from its first scrape,
so Prometheus' rate()/increase() count the first increment of each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from factories import group, measure
from polling import until
from schemacache import Node, RetryPolicy, open_registry
from schemacache.kinds import KINDS
from schemacache.node.node import ALERT_NAMES
from schemacache.testing import AlertReceiver, FaultyHandler

DEADLINE = 15.0
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: Node) -> Series:
    """Every labelled counter, gauge and histogram-count sample of the node."""
    series: Series = {}
    for family in text_string_to_metric_families(node.metrics.render().decode()):
        for sample in family.samples:
            if sample.labels and not sample.name.endswith(("_created", "_bucket", "_sum")):
                series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    await until(cond, what, DEADLINE)


async def test_first_scrape_has_every_series_at_zero(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"fail": {"measure/g/bad": "injected"}}))
    registry = open_registry("memory://")
    webhook = AlertReceiver()
    await webhook.start()
    try:
        node = Node(registry, name="n", state_dir=tmp_path / "n",
                    handler=FaultyHandler(faults), alert_webhook=webhook.url,
                    retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02),
                    repair_backoff_base=0.05, repair_backoff_cap=0.1, monitor_interval=0.05)
        first = scrape(node)
        assert first and all(v == 0 for v in first.values()), \
            {k: v for k, v in first.items() if v}
        names = {name for name, _ in first}
        for name in ("schemacache_events_received_total", "schemacache_handler_calls_total",
                     "schemacache_retries_total", "schemacache_retries_exhausted_total",
                     "schemacache_repairs_total", "schemacache_watch_restarts_total",
                     "schemacache_alerts_sent_total", "schemacache_cache_entries",
                     "schemacache_handler_duration_seconds_count"):
            assert name in names, name
        alertnames = {dict(labels)["alertname"] for name, labels in first
                      if name == "schemacache_alerts_sent_total"}
        assert alertnames == set(ALERT_NAMES)
        kinds = {dict(labels)["kind"] for name, labels in first
                 if name == "schemacache_events_received_total"}
        assert kinds == set(KINDS)

        async with node:
            await registry.put(group("g"))
            await registry.put(measure("g", "ok"))
            await registry.put(measure("g", "bad"))
            await wait_until(lambda: len(node.failures()) == 1, "the failure")
            await registry.delete("measure/g/ok")
            faults.write_text(json.dumps({}))
            await node.repair()
            await wait_until(lambda: not node.failures(), "the repair")
            await wait_until(lambda: bool(webhook.matching(resolved=True)), "resolve")
            later = scrape(node)
        # Activity moved series that were already there; it created none.
        assert set(later) <= set(first), sorted(set(later) - set(first))
        moved = {k for k in first if later[k] != first[k]}
        assert ("schemacache_retries_exhausted_total", (("kind", "measure"),)) in moved
        assert ("schemacache_repairs_total",
                (("outcome", "ok"), ("reason", "manual"))) in moved
    finally:
        await webhook.stop()
        await registry.close()


async def test_propagation_counts_each_watched_apply_with_its_delay(tmp_path: Path) -> None:
    """``schemacache_propagation_seconds``: one observation per version applied
    from the watch, the time from its registry commit to the handler's success."""
    registry = open_registry("memory://")
    faults = tmp_path / "faults.json"
    faults.write_text("{}")
    node = Node(registry, name="n", state_dir=tmp_path / "n", handler=FaultyHandler(faults))
    try:
        await node.start()
        await node.ready(DEADLINE)
        before = time.time()
        revision = max(r.revision for r in await registry.apply([group("g"), measure("g", "m")]))
        assert await node.wait_for_revision(revision, DEADLINE)
        elapsed = time.time() - before
        samples = {s.name: s.value for f in text_string_to_metric_families(
            node.metrics.render().decode()) for s in f.samples
            if s.name.startswith("schemacache_propagation_seconds")}
        assert samples["schemacache_propagation_seconds_count"] == 2
        assert 0 < samples["schemacache_propagation_seconds_sum"] <= 2 * elapsed
    finally:
        await node.stop()
        await registry.close()
