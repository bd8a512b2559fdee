"""Read a window back: from summed hash fields to per-series counters, histograms and figures.

>>> window = summarise({"v1|stable||events": 4, "v1|stable||errors": 1,
...                     "v1|stable||confidence_count": 4, "v1|stable||low_confidence": 1,
...                     "v1|stable||confidence_sum_micros": 2_600_000})
>>> series = window[Series("v1", "stable")]
>>> series.error_ratio, series.confidence_mean, series.low_confidence_ratio
(0.25, 0.65, 0.25)
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.latency_sketch import LogBucketMapping
from detectors.series import Metric, Series, split_field

__all__ = ["SeriesWindow", "summarise"]


@dataclass
class SeriesWindow:
    """One series' share of a window: plain counters and binned histograms."""

    series: Series
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    histograms: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )

    def counter(self, metric: str) -> int:
        return self.counters.get(metric, 0)

    @property
    def events(self) -> int:
        return self.counter(Metric.EVENTS)

    @property
    def error_ratio(self) -> float:
        return _ratio(self.counter(Metric.ERRORS), self.events)

    @property
    def confidence_mean(self) -> float:
        count = self.counter(Metric.CONFIDENCE_COUNT)
        return _ratio(self.counter(Metric.CONFIDENCE_SUM_MICROS), count) / 1_000_000

    @property
    def low_confidence_ratio(self) -> float:
        return _ratio(self.counter(Metric.LOW_CONFIDENCE), self.counter(Metric.CONFIDENCE_COUNT))

    def histogram(self, metric: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(bins, counts)`` of a binned metric, sorted by bin."""
        cells = self.histograms.get(metric, {})
        bins = np.fromiter(sorted(cells), dtype=np.int64, count=len(cells))
        counts = np.fromiter((cells[b] for b in bins.tolist()), dtype=np.int64, count=len(cells))
        return bins, counts

    def latency_quantile(self, mapping: LogBucketMapping, q: float) -> float:
        bins, counts = self.histogram(Metric.LATENCY)
        return mapping.quantile(bins, counts, q)


def summarise(fields: Mapping[str, int]) -> dict[Series, SeriesWindow]:
    """Split a window's summed fields by series; ``metric:bin`` fields become histograms."""
    windows: dict[Series, SeriesWindow] = {}
    for name, value in fields.items():
        series, metric, bin_index = _parse_field(name)
        window = windows.get(series)
        if window is None:
            window = windows[series] = SeriesWindow(series)
        if bin_index is None:
            window.counters[metric] += value
        else:
            window.histograms[metric][bin_index] += value
    return windows


# Every tick reads the same few thousand field names again: parse each once. The evaluator's
# series cap bounds how many there are; the cache bounds what a flood of them could cost.
@functools.lru_cache(maxsize=1 << 16)
def _parse_field(name: str) -> tuple[Series, str, int | None]:
    """The series, the metric and, for a ``metric:bin`` field, the bin."""
    series, metric = split_field(name)
    base, separator, bin_index = metric.rpartition(":")
    if separator and bin_index.lstrip("-").isdigit():
        return series, base, int(bin_index)
    return series, metric, None


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan
