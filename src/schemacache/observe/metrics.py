"""The node's Prometheus metrics, on a collector registry of its own.

Each :class:`NodeMetrics` owns a :class:`prometheus_client.CollectorRegistry`,
so several nodes in one process (tests, benchmarks) never share counters.
The names are part of the public surface (alert rules and dashboards use them).

Every labelled series that can appear is created at 0 when the node starts
(:meth:`NodeMetrics.initialise`): Prometheus' ``rate()`` and ``increase()``
need a series' first sample *before* its first increment, or they miss it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .tally import CounterTally, HistogramTally

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
REPAIR_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
PREFIX = "schemacache_"
EVENT_TYPES = ("PUT", "DELETE")
"""Label ``type`` of ``events_received``."""
HANDLER_OPS = ("apply", "delete")
"""Label ``op`` of the handler metrics."""
HANDLER_OUTCOMES = ("ok", "error", "timeout", "permanent")
"""Label ``outcome`` of ``handler_calls``."""


class NodeMetrics:
    """Every metric a node exports.

    :param registry: the collector registry to register on (default: a new one).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        # Counted once per event or handler call: plain-number tallies (see .tally).
        self.events_received = CounterTally(
            f"{p}events_received", "Watch events received", ["kind", "type"], registry=r)
        self.handler_calls = CounterTally(
            f"{p}handler_calls", "Handler calls by outcome (ok|error|timeout|permanent)",
            ["kind", "op", "outcome"], registry=r)
        self.handler_duration = HistogramTally(
            f"{p}handler_duration_seconds", "Handler call duration", ["kind", "op"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.retries = Counter(f"{p}retries", "Handler retries scheduled", ["kind"], registry=r)
        self.retries_exhausted = Counter(
            f"{p}retries_exhausted", "Events whose retries were exhausted", ["kind"], registry=r)
        self.failed_keys = Gauge(f"{p}failed_keys", "Keys recorded as failed", registry=r)
        self.blocked_keys = Gauge(
            f"{p}blocked_keys", "Keys parked behind a failing prerequisite", registry=r)
        self.repairs = Counter(
            f"{p}repairs", "Repairs (full syncs) by reason and outcome", ["reason", "outcome"],
            registry=r)
        self.repair_duration = Histogram(
            f"{p}repair_duration_seconds", "Repair duration", buckets=REPAIR_BUCKETS, registry=r)
        self.last_repair_success = Gauge(
            f"{p}last_repair_success_timestamp_seconds",
            "Unix time of the last successful repair", registry=r)
        self.applied_revision = Gauge(
            f"{p}applied_revision", "Registry revision the node has fully processed", registry=r)
        self.registry_revision = Gauge(
            f"{p}registry_revision",
            "Newest registry revision the node knows the schema at (watch events and progress)",
            registry=r)
        self.revision_lag = Gauge(
            f"{p}revision_lag", "registry_revision - applied_revision", registry=r)
        self.propagation = HistogramTally(
            f"{p}propagation_seconds", "Registry commit to handler applied",
            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{p}queue_depth", "Keys waiting in the work queue", registry=r)
        self.queue_longest_running = Gauge(
            f"{p}queue_longest_running_seconds", "Age of the longest-running handler call",
            registry=r)
        self.watch_restarts = Counter(
            f"{p}watch_restarts", "Watch restarts by reason", ["reason"], registry=r)
        self.registry_connected = Gauge(
            f"{p}registry_connected", "1 while the watch is connected", registry=r)
        self.cache_entries = Gauge(
            f"{p}cache_entries", "Applied resources by kind", ["kind"], registry=r)
        self.alerts_sent = Counter(
            f"{p}alerts_sent", "Alert notifications by outcome", ["alertname", "outcome"],
            registry=r)

    def initialise(
        self,
        *,
        kinds: Iterable[str],
        repair_reasons: Iterable[str],
        repair_outcomes: Iterable[str],
        watch_restart_reasons: Iterable[str],
        alertnames: Iterable[str],
        alert_outcomes: Iterable[str],
    ) -> None:
        """Create every labelled series that can appear, at 0.

        :param kinds: the known resource kinds (label ``kind``).
        :param repair_reasons: label ``reason`` of ``repairs``.
        :param repair_outcomes: label ``outcome`` of ``repairs``.
        :param watch_restart_reasons: label ``reason`` of ``watch_restarts``.
        :param alertnames: the alerts the node can send (label ``alertname``).
        :param alert_outcomes: label ``outcome`` of ``alerts_sent``.
        """
        for kind in kinds:
            for event_type in EVENT_TYPES:
                self.events_received.labels(kind=kind, type=event_type)
            for op in HANDLER_OPS:
                self.handler_duration.labels(kind=kind, op=op)
                for outcome in HANDLER_OUTCOMES:
                    self.handler_calls.labels(kind=kind, op=op, outcome=outcome)
            self.retries.labels(kind=kind)
            self.retries_exhausted.labels(kind=kind)
            self.cache_entries.labels(kind=kind)
        outcomes = tuple(repair_outcomes)
        for reason in repair_reasons:
            for outcome in outcomes:
                self.repairs.labels(reason=reason, outcome=outcome)
        for reason in watch_restart_reasons:
            self.watch_restarts.labels(reason=reason)
        sent = tuple(alert_outcomes)
        for alertname in alertnames:
            for outcome in sent:
                self.alerts_sent.labels(alertname=alertname, outcome=outcome)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def exported_names(metrics: NodeMetrics) -> set[str]:
    """Every sample name the metrics expose (``_total``, ``_bucket``, … included)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
    return names
