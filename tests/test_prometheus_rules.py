"""deploy/prometheus/alerts.yml: valid for promtool, unit-tested, and only over exported metrics.

promtool comes from Debian's ``prometheus`` package (``scripts/install-promtool.sh``).
Without it these tests fail; set ``SCHEMACACHE_SKIP_PROMTOOL=1`` to skip them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemacache.node.node import ALERT_NAMES
from schemacache.observe.alerts import SEVERITIES
from schemacache.observe.metrics import NodeMetrics, exported_names

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "schemacache.json"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTS = {"SchemaEventRetriesExhausted", "SchemaRepairFailing", "SchemaRegistryUnreachable",
          "SchemaCacheLagging"}
BY_RE = re.compile(r"\bby\s*\(([^)]*)\)")
METRIC_RE = re.compile(r"\bschemacache_[a-z_]+")
# Sample names prometheus-client derives from a family, by metric type.
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created")}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("SCHEMACACHE_SKIP_PROMTOOL") == "1":
            pytest.skip("promtool not installed and SCHEMACACHE_SKIP_PROMTOOL=1")
        pytest.fail("promtool not found: run scripts/install-promtool.sh "
                    "(or set SCHEMACACHE_SKIP_PROMTOOL=1 to skip)")
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_unit_tests() -> None:
    out = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # Every alert is exercised by the unit tests.
    tested = set(re.findall(r"alertname:\s*(\w+)", RULES_TEST.read_text()))
    assert tested == ALERTS


def test_alerts_present_with_severity_and_annotations() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert "for" in rule, name
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"], name
        assert "{{ $labels.instance }}" in rule["annotations"]["description"], name


def node_metric_names() -> set[str]:
    """Every series name a node exports, by the sample names Prometheus scrapes.

    A labelled metric exposes no sample until a child exists, so sample names are
    derived from each family's type; a counter's family name (without
    ``_total``) is not a series and is not included.
    """
    metrics = NodeMetrics()
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_derived_names_match_real_samples() -> None:
    metrics = NodeMetrics()
    metrics.retries_exhausted.labels(kind="stream").inc()
    metrics.handler_duration.labels(kind="stream", op="apply").observe(0.1)
    actual = {s.name for fam in metrics.registry.collect() for s in fam.samples}
    assert actual <= exported_names(metrics)
    assert actual <= node_metric_names()
    assert {"schemacache_retries_exhausted_total", "schemacache_handler_duration_seconds_bucket",
            "schemacache_propagation_seconds_bucket", "schemacache_registry_connected",
            "schemacache_repairs_total"} <= node_metric_names()


def test_rules_only_use_exported_metrics() -> None:
    exported = node_metric_names()
    used: set[str] = set()
    for rule in rules():
        found = set(METRIC_RE.findall(rule["expr"]))
        assert found, f"rule {rule.get('alert') or rule.get('record')} uses no node metric"
        used |= found
    unknown = used - exported
    assert not unknown, f"rules use metrics the node does not export: {sorted(unknown)}"


def test_metric_check_catches_a_typo() -> None:
    # The check above must be able to fail: a counter without ``_total`` or a
    # misspelt name is not a series the node exports.
    assert "schemacache_retries_exhausted" not in node_metric_names()
    assert "schemacache_retry_exhausted_total" not in node_metric_names()
    assert METRIC_RE.findall('rate(schemacache_retry_exhausted_total[5m])') == [
        "schemacache_retry_exhausted_total"]


def test_dashboard_uses_exported_metrics_and_defined_recordings() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    recorded = {r["record"] for r in rules() if "record" in r}
    for expr in exprs:
        assert set(METRIC_RE.findall(expr)) <= node_metric_names(), expr
        assert set(re.findall(r"\bschemacache:[a-z0-9_:]+", expr)) <= recorded, expr


def test_rule_severities_match_the_nodes_own_alerts() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(ALERT_NAMES) >= ALERTS
    for name in ALERTS:
        assert alerts[name]["labels"]["severity"] == SEVERITIES[name], name


def test_rules_stay_quiet_while_the_node_delivers_the_same_alert() -> None:
    for rule in rules():
        if "alert" in rule:
            assert ("schemacache:alerts_delivered:increase5m"
                    f'{{alertname="{rule["alert"]}"}}') in rule["expr"], rule["alert"]


def grouping_labels(expr: str) -> set[str]:
    """Labels a query groups by, through the recording rules it uses too."""
    labels = {label.strip() for group in BY_RE.findall(expr) for label in group.split(",")}
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    for name in re.findall(r"\bschemacache:[a-z0-9_:]+", expr):
        labels |= grouping_labels(recorded[name])
    return labels - {"", "job", "le"}


def test_dashboard_legends_name_every_grouping_label() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            named = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            missing = grouping_labels(target["expr"]) - named
            assert not missing, f"panel {panel['title']!r}: legend lacks {sorted(missing)}"
    assert grouping_labels("sum by (instance, kind) (x)") == {"instance", "kind"}


def test_alertmanager_example_is_valid() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool not found: run scripts/install-promtool.sh")
    out = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert {"alertname", "instance"} <= set(config["route"]["group_by"])
