"""The plain-number tallies export exactly what prometheus_client's own
Counter and Histogram export for the same observations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemacache.observe.tally import CounterTally, HistogramTally

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
OBSERVED = (0.0, 0.001, 0.0015, 0.01, 0.5, 1.0, 3.0, 10.0, 11.0, 250.0)


def _samples(registry: CollectorRegistry) -> list[tuple[str, str, dict[str, str], float]]:
    """Every sample of the text exposition, ``_created`` values blanked (they
    are wall-clock times of two different objects)."""
    text = generate_latest(registry).decode()
    return [(family.type, s.name, s.labels, 0.0 if s.name.endswith("_created") else s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def test_a_counter_tally_exports_what_a_counter_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = CounterTally("x_events", "Events", ["kind", "type"], registry=ours)
    counter = Counter("x_events", "Events", ["kind", "type"], registry=theirs)
    for kind, type_, n in (("group", "PUT", 3), ("measure", "DELETE", 1), ("stream", "PUT", 0)):
        cell, child = tally.labels(kind=kind, type=type_), counter.labels(kind=kind, type=type_)
        for _ in range(n):
            cell.value += 1
            child.inc()
    tally.labels(kind="group", type="PUT").inc(2.5)
    counter.labels(kind="group", type="PUT").inc(2.5)
    assert _samples(ours) == _samples(theirs)
    assert ours.get_sample_value("x_events_total", {"kind": "group", "type": "PUT"}) == 5.5


@pytest.mark.parametrize("labelled", [True, False])
def test_a_histogram_tally_exports_what_a_histogram_does(labelled: bool) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    names = ["kind", "op"] if labelled else []
    tally = HistogramTally("x_seconds", "Seconds", names, buckets=BUCKETS, registry=ours)
    histogram = Histogram("x_seconds", "Seconds", names, buckets=BUCKETS, registry=theirs)
    for value in OBSERVED:
        if labelled:
            tally.labels(kind="measure", op="apply").observe(value)
            histogram.labels(kind="measure", op="apply").observe(value)
        else:
            tally.observe(value)
            histogram.observe(value)
    if labelled:  # a label set created but never observed exports zeros
        tally.labels(kind="group", op="delete")
        histogram.labels(kind="group", op="delete")
    assert _samples(ours) == _samples(theirs)
    labels = {"kind": "measure", "op": "apply"} if labelled else {}
    assert ours.get_sample_value("x_seconds_count", labels) == len(OBSERVED)
    assert ours.get_sample_value("x_seconds_bucket", {**labels, "le": "0.01"}) == 4


def test_tallies_refuse_what_prometheus_refuses() -> None:
    tally = CounterTally("x_calls", "Calls", ["kind"])
    with pytest.raises(ValueError, match="labels"):
        tally.labels(kind="group", op="apply")
    with pytest.raises(ValueError, match="non-negative"):
        tally.labels(kind="group").inc(-1)
    with pytest.raises(ValueError, match="ascending"):
        HistogramTally("x_seconds", "Seconds", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="labels"):
        HistogramTally("x_seconds", "Seconds", ["kind"], buckets=BUCKETS).observe(1.0)
