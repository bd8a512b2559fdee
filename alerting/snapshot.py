"""What one evaluator tick computed, and the collector that serves it at scrape time.

The evaluator replaces the whole :class:`Snapshot` once per tick; a scrape reads whichever snapshot
is current, so ``/metrics`` is always one consistent tick, never half of two. The registry is
passed in, never global, so every test can use a fresh one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerting.metric_names import CATALOGUE, MetricName

__all__ = ["Sample", "Snapshot", "SnapshotCollector"]


@dataclass(frozen=True, slots=True)
class Sample:
    metric: MetricName
    labels: tuple[str, ...]
    value: float


@dataclass
class Snapshot:
    samples: list[Sample] = field(default_factory=list)
    taken_at_ms: int = 0

    def add(self, metric: MetricName, labels: Iterable[str], value: float) -> None:
        self.samples.append(Sample(metric, tuple(labels), value))

    def value(self, metric: MetricName, **labels: str) -> float | None:
        """The value of the one sample matching ``labels`` exactly (tests and the CLI use it)."""
        for sample in self.samples:
            if (
                sample.metric == metric
                and dict(zip(metric.labels, sample.labels, strict=True)) == labels
            ):
                return sample.value
        return None


class SnapshotCollector(Collector):
    """Yields the current snapshot's metric families; every catalogued metric is always present."""

    def __init__(self, extra_metrics: Iterable[MetricName] = ()) -> None:
        self._snapshot = Snapshot()
        self._metrics = (*CATALOGUE, *extra_metrics)

    def publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot  # one reference swap: atomic for concurrent scrapes

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def collect(self) -> Iterator[Metric]:
        by_metric: dict[str, list[Sample]] = defaultdict(list)
        for sample in self._snapshot.samples:
            by_metric[sample.metric.name].append(sample)
        for metric in self._metrics:
            family: CounterMetricFamily | GaugeMetricFamily
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
            for sample in by_metric.get(metric.name, []):
                if metric.kind == "counter" or not math.isnan(sample.value):
                    family.add_metric(list(sample.labels), sample.value)
            yield family
