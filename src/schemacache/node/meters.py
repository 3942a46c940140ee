"""The reconciler's metric cells, kept per label set: ``labels()`` hashes its
labels on every call, too slow for once per event."""

from __future__ import annotations

from ..model import EventType
from ..observe.metrics import NodeMetrics
from ..observe.tally import CounterCell, HistogramCell


class ReconcileMeters:
    """Counters of events and handler calls, and cached resources per kind.

    :param metrics: the node's metrics.
    """

    def __init__(self, metrics: NodeMetrics):
        self.metrics = metrics
        self._events: dict[tuple[str, EventType], CounterCell] = {}
        self._calls: dict[tuple[str, str, str], tuple[CounterCell, HistogramCell]] = {}
        self._kind_counts: dict[str, int] = {}

    def event(self, kind: str, type_: EventType) -> None:
        """Count one watch event."""
        counter = self._events.get((kind, type_))
        if counter is None:
            counter = self._events[(kind, type_)] = self.metrics.events_received.labels(
                kind=kind, type=type_.value)
        counter.value += 1

    def call(self, kind: str, op: str, outcome: str, seconds: float) -> None:
        """Count one handler call and its duration."""
        children = self._calls.get((kind, op, outcome))
        if children is None:
            children = (self.metrics.handler_calls.labels(kind=kind, op=op, outcome=outcome),
                        self.metrics.handler_duration.labels(kind=kind, op=op))
            self._calls[(kind, op, outcome)] = children
        children[0].value += 1
        children[1].observe(seconds)

    def cached(self, kind: str, delta: int) -> None:
        """``delta`` more applied resources of ``kind``."""
        counts = self._kind_counts
        if kind not in counts:
            counts[kind] = 0
            # Read when scraped: a gauge's set() takes a lock, once per apply.
            self.metrics.cache_entries.labels(kind=kind).set_function(lambda: counts[kind])
        counts[kind] += delta
