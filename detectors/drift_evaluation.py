"""Drift of one series' windows against its model's reference: statistics, then decisions.

For every item of the reference (each feature, the prediction, the confidence) and each window,
:class:`ReferenceComparison` computes all six statistics of ``detectors.drift_statistics`` from
the window's histogram and the reference counts, a batch of items at a time:

* PSI, Jensen-Shannon, Hellinger and the chi-square p-value over all bins, missing included, so a
  surge of missing values is drift;
* Kolmogorov-Smirnov and Wasserstein (numeric items only) over the ordered bins without the
  missing one, with the reference's bin values and spread.

:func:`evaluate_series` then applies the policy with ``detectors.drift_decision.decide`` to the
short, the long and (when configured) the fast window: all items of the series form one
Benjamini-Hochberg family per window; the drift share counts the features only. Each window's own
verdict tells which window raised or cleared a drift. A feature held drifted by an alarm of the
sequential test (``detectors.sequential_detector``) is drifted too, as if by a window of its own,
``"sequential"``. The reference's size and occupied bins per
item feed the PSI noise floor, so a thin window cannot raise drift.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.drift_decision import BoolArray, DriftPolicy, decide
from detectors.drift_statistics import DriftStatistic, FloatArray, compute_statistics_by_feature
from detectors.reference import CONFIDENCE_ITEM, FeatureReference, Reference
from driftline.drift_config import DriftConfig

__all__ = [
    "ORDERED_STATISTICS",
    "ReferenceComparison",
    "SeriesDrift",
    "WindowStatistics",
    "evaluate_series",
    "policy_for",
]

IntArray = npt.NDArray[np.int64]

ORDERED_STATISTICS = (DriftStatistic.KOLMOGOROV_SMIRNOV, DriftStatistic.WASSERSTEIN)


@dataclass(frozen=True)
class WindowStatistics:
    """One window's figures, one value per item (in :attr:`ReferenceComparison.items` order)."""

    samples: IntArray
    statistics: Mapping[DriftStatistic, FloatArray]


@dataclass(frozen=True)
class _Group:
    """Items with the same number of bins, scored in one batched call."""

    rows: IntArray
    reference_counts: IntArray
    bin_values: FloatArray | None = None
    spreads: FloatArray | None = None


class ReferenceComparison:
    """A reference's items, grouped for batched statistics; build once per reference.

    ``confidence_bins`` is the consumers' ``monitoring.confidence_bins``; a confidence reference
    built with another number of bins cannot be compared and is left out (:attr:`skipped`).
    """

    def __init__(self, reference: Reference, confidence_bins: int) -> None:
        self.reference = reference
        items: list[FeatureReference] = list(reference.features)
        self.skipped: list[str] = []
        if reference.prediction is not None:
            items.append(reference.prediction)
        if reference.confidence is not None:
            if reference.confidence.bin_count - 3 == confidence_bins:
                items.append(reference.confidence)
            else:
                self.skipped.append(CONFIDENCE_ITEM)
        self.item_references = tuple(items)
        self.items = tuple(item.name for item in items)
        self.reference_samples = np.array([sum(item.counts) for item in items], dtype=np.int64)
        self.reference_bins = np.array(
            [np.count_nonzero(item.counts) for item in items], dtype=np.int64
        )
        self.feature_count = len(reference.features)
        self._unordered = self._groups(range(len(items)), ordered=False)
        self._ordered = self._groups(
            (i for i, item in enumerate(items) if item.ordered), ordered=True
        )

    def _groups(self, rows: Iterable[int], *, ordered: bool) -> list[_Group]:
        by_bins: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            by_bins[self.item_references[row].bin_count].append(row)
        groups = []
        for _, members in sorted(by_bins.items()):
            items = [self.item_references[row] for row in members]
            counts = np.array([item.counts for item in items], dtype=np.int64)
            if not ordered:
                groups.append(_Group(np.array(members, dtype=np.int64), counts))
                continue
            groups.append(
                _Group(
                    np.array(members, dtype=np.int64),
                    counts[:, 1:],  # the missing bin has no place in an order
                    np.array([item.bin_values for item in items], dtype=np.float64),
                    np.array([item.spread for item in items], dtype=np.float64),
                )
            )
        return groups

    def statistics(self, windows: Sequence[Mapping[str, IntArray]]) -> list[WindowStatistics]:
        """Every statistic of every item for each window's histograms (``window_counts``).

        All windows go through one batched call per group of items, so a tick pays the fixed
        cost of the scipy calls once, not once per series and window.
        """
        size = len(self.items)
        current = [[counts[name] for name in self.items] for counts in windows]
        results = [
            {statistic: np.full(size, math.nan) for statistic in DriftStatistic} for _ in windows
        ]
        if not windows:
            return []
        for group in self._unordered:
            rows = group.rows.tolist()
            stacked = np.concatenate([np.stack([c[row] for row in rows]) for c in current])
            computed = compute_statistics_by_feature(
                np.tile(group.reference_counts, (len(windows), 1)),
                stacked,
                ordered=False,
                bin_values=None,
                reference_spreads=None,
            )
            for statistic, values in computed.items():
                for index, part in enumerate(np.split(values, len(windows))):
                    results[index][statistic][group.rows] = part
        for group in self._ordered:
            assert group.bin_values is not None and group.spreads is not None
            rows = group.rows.tolist()
            stacked = np.concatenate([np.stack([c[row][1:] for row in rows]) for c in current])
            computed = compute_statistics_by_feature(
                np.tile(group.reference_counts, (len(windows), 1)),
                stacked,
                ordered=True,
                bin_values=np.tile(group.bin_values, (len(windows), 1)),
                reference_spreads=np.tile(group.spreads, len(windows)),
            )
            for statistic in ORDERED_STATISTICS:
                for index, part in enumerate(np.split(computed[statistic], len(windows))):
                    results[index][statistic][group.rows] = part
        return [
            WindowStatistics(np.array([int(c.sum()) for c in counts], dtype=np.int64), result)
            for counts, result in zip(current, results, strict=True)
        ]


def policy_for(
    config: DriftConfig, model: str, comparison: ReferenceComparison
) -> tuple[DriftPolicy, list[str]]:
    """The model's policy, and the configured thresholds that name no item of its reference.

    Per-item thresholds are ``drift.per_feature_thresholds`` overlaid with
    ``drift.models.<model>.per_feature_thresholds``; the prediction and the confidence take
    thresholds under ``@prediction`` and ``@confidence``.
    """
    thresholds = config.thresholds_for(model)
    items = set(comparison.items)
    policy = DriftPolicy(
        statistic=DriftStatistic(config.statistic),
        threshold=config.threshold,
        effect_size_statistic=(
            None
            if config.effect_size_statistic is None
            else DriftStatistic(config.effect_size_statistic)
        ),
        effect_size_threshold=config.effect_size_threshold,
        minimum_samples=config.minimum_samples,
        false_discovery_rate=config.false_discovery_rate,
        require_both_windows=config.require_both_windows,
        per_feature_thresholds={k: v for k, v in thresholds.items() if k in items},
        psi_noise_tail_probability=config.psi_noise_tail_probability,
    )
    return policy, sorted(set(thresholds) - items)


@dataclass(frozen=True)
class SeriesDrift:
    """The verdict for one series at one tick; arrays follow :attr:`items`.

    ``drifted`` and ``nodata`` are the policy's decision (both windows or either, as configured),
    or a sequential alarm; ``window_drifted`` holds each window's verdict on its own. ``windows``
    is keyed ``"fast"`` (when evaluated), ``"short"``, ``"long"``, in that order;
    ``window_drifted`` too, after ``"sequential"`` when the series has sequential verdicts.
    ``drift_share`` is the share of the *features* (not the outputs) with data that drifted
    (``nan`` when none has data).
    """

    items: tuple[str, ...]
    windows: Mapping[str, WindowStatistics]
    drifted: BoolArray
    nodata: BoolArray
    window_drifted: Mapping[str, BoolArray]
    drift_share: float


def evaluate_series(
    comparison: ReferenceComparison,
    policy: DriftPolicy,
    short: WindowStatistics,
    long: WindowStatistics,
    fast: WindowStatistics | None = None,
    sequential: BoolArray | None = None,
) -> SeriesDrift:
    """Decide every item of one series: one Benjamini-Hochberg family per window; ``sequential``
    marks the items an alarm of the sequential test holds drifted."""
    decision = decide(
        policy,
        comparison.items,
        short.statistics,
        long.statistics,
        short.samples,
        long.samples,
        statistics_fast=None if fast is None else fast.statistics,
        samples_fast=None if fast is None else fast.samples,
        reference_samples=comparison.reference_samples,
        reference_bins=comparison.reference_bins,
    )
    drifted, nodata = decision.drifted, decision.nodata
    window_drifted = dict(decision.window_drifted)
    if sequential is not None:
        drifted, nodata = drifted | sequential, nodata & ~sequential
        window_drifted = {"sequential": sequential, **window_drifted}
    features = slice(0, comparison.feature_count)
    with_data = int(np.count_nonzero(~nodata[features]))
    drift_share = float(np.count_nonzero(drifted[features])) / with_data if with_data else math.nan
    windows = {"short": short, "long": long}
    if fast is not None:
        windows = {"fast": fast, **windows}
    return SeriesDrift(
        items=comparison.items,
        windows=windows,
        drifted=drifted,
        nodata=nodata,
        window_drifted=window_drifted,
        drift_share=drift_share,
    )
