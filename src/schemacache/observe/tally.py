"""Counters and histograms kept as plain numbers, read by Prometheus when scraped.

The node counts every watch event and every handler call.  A
:class:`prometheus_client.Counter` child takes a lock and three method calls
per increment and a histogram's ``observe`` two of those; at tens of
thousands of events a second that was about a tenth of a catching-up node's
time.  These families keep a number per label set in a slotted cell that the
event loop bumps directly, and export them through a custom collector
(``prometheus_client``'s documented extension point), so scrapes, ``render()``
and ``get_sample_value`` see the same names, types, labels and ``_created``
samples as before.

Cells are written on the event loop's thread; a scrape from another thread
reads them under the GIL and may see a count one event old, never a torn one.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_bound_text = cast(Callable[[float], str], floatToGoString)
"""A bucket bound as ``prometheus_client`` writes it in ``le``."""


class CounterCell:
    """One label set of a :class:`CounterTally`; bump :attr:`value` directly."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1), as ``prometheus_client``'s counters do."""
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class HistogramCell:
    """One label set of a :class:`HistogramTally`.

    :param bounds: the buckets' upper bounds, ascending, ``+Inf`` excluded.
    """

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        # Bucket ``le`` bounds are inclusive: the first bound >= value.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Tally(Collector):
    """The label bookkeeping both families share."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        if registry is not None:
            registry.register(self)

    def _labels_of(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} given, "
                             f"{sorted(self.labelnames)} expected")
        return tuple(str(labels[n]) for n in self.labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class CounterTally(_Tally):
    """A labelled counter (exported as ``<name>_total``).

    :param name: the metric name, without ``_total``.
    :param documentation: its help text.
    :param labelnames: its label names (default none).
    :param registry: the collector registry to register on (default ``None``:
        not registered).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self._cells: dict[tuple[str, ...], CounterCell] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, **labels: str) -> CounterCell:
        """The cell of one label set, created at 0 on first use."""
        values = self._labels_of(labels)
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = CounterCell()
        return cell

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, cell in list(self._cells.items()):
            family.add_metric(values, cell.value, created=cell.created)
        return [family]


class HistogramTally(_Tally):
    """A histogram, labelled or not.

    :param name: the metric name.
    :param documentation: its help text.
    :param labelnames: its label names (default none: use :meth:`observe`).
    :param buckets: the buckets' upper bounds, ascending (``+Inf`` is added).
    :param registry: the collector registry to register on (default ``None``).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: CollectorRegistry | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError(f"{name}: buckets must be in ascending order")
        self._cells: dict[tuple[str, ...], HistogramCell] = {}
        self._unlabelled = HistogramCell(self.bounds) if not labelnames else None
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, **labels: str) -> HistogramCell:
        """The cell of one label set, created empty on first use."""
        values = self._labels_of(labels)
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = HistogramCell(self.bounds)
        return cell

    def observe(self, value: float) -> None:
        """Count one observation (an unlabelled histogram only)."""
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels: observe through labels(...)")
        self._unlabelled.observe(value)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        cells = list(self._cells.items())
        if self._unlabelled is not None:
            cells.append(((), self._unlabelled))
        bounds = [_bound_text(b) for b in self.bounds] + ["+Inf"]
        for values, cell in cells:
            counts, total = list(cell.counts), cell.sum
            running, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                buckets.append((bound, float(running)))
            family.add_metric(values, buckets, total)
            family.samples.append(Sample(f"{self.name}_created",
                                         dict(zip(self.labelnames, values, strict=True)),
                                         cell.created, None, None))
        return [family]
