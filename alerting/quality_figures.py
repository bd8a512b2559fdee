"""Quality figures for the evaluator: labels, label-free estimates, versions, segments.

:class:`QualityFigures` is a :class:`~alerting.evaluator.Contributor` (and a tick hook, for the
labels no model could be told for). For every model with a ``labels`` section, each window and
series:

* labelled predictions, label coverage (labelled / predicted, the same predictions), label delay
  p50/p95; below ``quality.minimum_labelled`` labels the window is ``nodata`` and its quality
  figures are absent;
* accuracy, and per positive class precision, recall and F1, with Wilson 95 % intervals; MAE and
  RMSE for regression models;
* the label-free estimates of accuracy and per-class precision, when the model has a quality
  reference with enough labels (``detectors.label_free_estimate``);
* the share of positive predictions per class.

Per window, **versions side by side**: each canary or shadow version minus the stable traffic
(all stable versions together) on error ratio, latency p99, low-confidence ratio, accuracy,
precision and recall, with the p-value of the two-proportion z-test (none for latency). Both sides
need ``quality.comparison_minimum_events`` events (and, for label figures, the minimum labels).

Per window, **segments**: each segment's share of its version's traffic (and its difference from
the quality reference's share), and, per attribute, the disparity of each value's positive-
prediction rate, precision, recall, accuracy and success share (1 - error ratio) against the
attribute's best-served value, as a ratio and a difference. A value without enough data is
``nodata`` (flag 1, figures absent) and is never the best-served one.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting import metric_names as names
from alerting.evaluator import ModelWindows
from alerting.snapshot import Snapshot
from consumers.label_writer import REFUSED_LABELS_FIELD
from consumers.window_writer import INVALID_EVENTS_MODEL
from detectors.label_free_estimate import ConfidenceCalibration
from detectors.label_update import LABEL_DELAY_MAPPING
from detectors.latency_sketch import LogBucketMapping
from detectors.quality_reference import QualityReference, QualityReferenceError
from detectors.quality_statistics import (
    ConfusionCounts,
    proportion,
    two_proportion_p_value,
    wilson_interval,
)
from detectors.series import Metric, Series, class_metric, split_field
from detectors.window_store import WindowStore
from detectors.window_summary import SeriesWindow
from driftline.config import Config
from driftline.quality_config import LabelKind, ModelLabelsConfig

__all__ = ["QualityFigures", "QualityReferences", "merge_windows"]

log = logging.getLogger(__name__)

DELAY_QUANTILES = (0.5, 0.95)
CALIBRATION_MINIMUM_LABELLED = 100


class QualityReferences:
    """Each model's quality reference, re-read from the store at most every ``refresh_s``."""

    def __init__(
        self,
        store: WindowStore,
        refresh_s: float = 30.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock_s = clock_s
        self._cached: dict[str, tuple[float, QualityReference | None]] = {}

    def reference(self, model: str) -> QualityReference | None:
        cached = self._cached.get(model)
        now = self.clock_s()
        if cached is not None and now - cached[0] < self.refresh_s:
            return cached[1]
        document = self.store.quality_reference(model)
        reference = None
        if document is not None:
            try:
                reference = QualityReference.from_json(document)
            except QualityReferenceError as error:
                log.error("model %s: quality reference ignored: %s", model, error)
        self._cached[model] = (now, reference)
        return reference


def merge_windows(series: Series, windows: Iterable[SeriesWindow]) -> SeriesWindow:
    """One window of several series' counters and histograms added up."""
    merged = SeriesWindow(series)
    for window in windows:
        for metric, value in window.counters.items():
            merged.counters[metric] += value
        for metric, cells in window.histograms.items():
            for bin_index, count in cells.items():
                merged.histograms[metric][bin_index] += count
    return merged


@dataclass(frozen=True)
class _Proportion:
    """A proportion with what it was computed from, for intervals and tests."""

    successes: float
    trials: float

    @property
    def value(self) -> float:
        return proportion(self.successes, self.trials)


class QualityFigures:
    def __init__(
        self,
        config: Config,
        store: WindowStore,
        reference_for: Callable[[str], QualityReference | None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reference_for = reference_for or (lambda model: None)
        self.latency = LogBucketMapping(config.monitoring.latency_relative_accuracy)
        self._warned: set[str] = set()

    # --- Contributor --------------------------------------------------------------------------

    def contribute(self, model: ModelWindows, snapshot: Snapshot) -> None:
        settings = self.config.model(model.model).labels
        if settings is None:
            return
        calibration = self._calibration(model.model)
        for window_name, by_series in model.windows.items():
            for series, window in by_series.items():
                self._series(
                    model.model, window_name, series, window, settings, calibration, snapshot
                )
            self._compare_versions(model.model, window_name, by_series, settings, snapshot)
            self._segments(model.model, window_name, by_series, settings, snapshot)
        self._lifetime(model.model, snapshot)

    # --- TickHook: labels of no model ---------------------------------------------------------

    def after_figures(self, snapshot: Snapshot) -> None:
        for name, count in self.store.totals(INVALID_EVENTS_MODEL).items():
            if name.startswith(REFUSED_LABELS_FIELD):
                reason = name[len(REFUSED_LABELS_FIELD) :]
                snapshot.add(names.LABELS_REFUSED_TOTAL, ("", reason), count)

    # --- per series ---------------------------------------------------------------------------

    def _calibration(self, model: str) -> ConfidenceCalibration | None:
        reference = self.reference_for(model)
        if reference is None:
            return None
        calibration = reference.calibration(CALIBRATION_MINIMUM_LABELLED)
        bins = self.config.monitoring.confidence_bins
        if calibration is not None and calibration.bins != bins:
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "model %s: quality reference has %d confidence bins, the config %d; no "
                    "label-free estimate until it is re-made",
                    model,
                    calibration.bins,
                    bins,
                )
            return None
        return calibration

    def _series(
        self,
        model: str,
        window_name: str,
        series: Series,
        window: SeriesWindow,
        settings: ModelLabelsConfig,
        calibration: ConfidenceCalibration | None,
        snapshot: Snapshot,
    ) -> None:
        labels = (model, *series, window_name)
        labelled = window.counter(Metric.LABELLED)
        events = window.events
        snapshot.add(names.WINDOW_LABELS_COUNT, labels, labelled)
        snapshot.add(names.LABEL_COVERAGE, labels, proportion(labelled, events))
        delay_bins, delay_counts = window.histogram(Metric.LABEL_DELAY)
        for q in DELAY_QUANTILES:
            seconds = LABEL_DELAY_MAPPING.quantile(delay_bins, delay_counts, q)
            snapshot.add(names.LABEL_DELAY, (*labels, str(q)), seconds)
        for label_class in settings.positive_classes:
            predicted = window.counter(class_metric(Metric.PREDICTED, label_class))
            snapshot.add(
                names.POSITIVE_PREDICTION, (*labels, label_class), proportion(predicted, events)
            )
        if calibration is not None and settings.kind is LabelKind.CLASSIFICATION:
            snapshot.add(
                names.ESTIMATED_ACCURACY,
                labels,
                calibration.estimate(self._confidence_counts(window, Metric.CONFIDENCE)),
            )
            for label_class in settings.positive_classes:
                metric = class_metric(Metric.PREDICTED_CONFIDENCE, label_class)
                estimate = calibration.estimate(self._confidence_counts(window, metric))
                snapshot.add(names.ESTIMATED_PRECISION, (*labels, label_class), estimate)

        nodata = labelled < self.config.quality.minimum_labelled
        snapshot.add(names.QUALITY_NODATA, labels, 1.0 if nodata else 0.0)
        if nodata:
            return
        if settings.kind is LabelKind.REGRESSION:
            resolution = settings.error_resolution
            absolute = window.counter(Metric.ABSOLUTE_ERROR_SUM) * resolution
            squared = window.counter(Metric.SQUARED_ERROR_SUM) * resolution * resolution
            snapshot.add(names.MEAN_ABSOLUTE_ERROR, labels, absolute / labelled)
            snapshot.add(names.ROOT_MEAN_SQUARED_ERROR, labels, math.sqrt(squared / labelled))
            return
        accuracy = _Proportion(window.counter(Metric.CORRECT), labelled)
        self._with_interval(names.ACCURACY, names.ACCURACY_INTERVAL, labels, accuracy, snapshot)
        for label_class in settings.positive_classes:
            counts = _confusion(window, label_class)
            class_labels = (*labels, label_class)
            precision = _Proportion(counts.true_positive, counts.predicted_positive)
            recall = _Proportion(counts.true_positive, counts.actual_positive)
            self._with_interval(
                names.PRECISION, names.PRECISION_INTERVAL, class_labels, precision, snapshot
            )
            self._with_interval(names.RECALL, names.RECALL_INTERVAL, class_labels, recall, snapshot)
            snapshot.add(names.F1, class_labels, counts.f1)

    def _confidence_counts(self, window: SeriesWindow, metric: str) -> npt.NDArray[np.int64]:
        bins = self.config.monitoring.confidence_bins
        counts = np.zeros(bins, dtype=np.int64)
        for bin_index, count in window.histograms.get(metric, {}).items():
            if 0 <= bin_index < bins:
                counts[bin_index] += count
        return counts

    @staticmethod
    def _with_interval(
        metric: names.MetricName,
        interval: names.MetricName,
        labels: tuple[str, ...],
        value: _Proportion,
        snapshot: Snapshot,
    ) -> None:
        snapshot.add(metric, labels, value.value)
        low, high = wilson_interval(value.successes, value.trials)
        snapshot.add(interval, (*labels, "lower"), float(low))
        snapshot.add(interval, (*labels, "upper"), float(high))

    # --- versions side by side ----------------------------------------------------------------

    def _compare_versions(
        self,
        model: str,
        window_name: str,
        by_series: Mapping[Series, SeriesWindow],
        settings: ModelLabelsConfig,
        snapshot: Snapshot,
    ) -> None:
        whole = {series: window for series, window in by_series.items() if not series.segment}
        stable = merge_windows(
            Series("", "stable"),
            (window for series, window in whole.items() if series.deployment == "stable"),
        )
        minimum_events = self.config.quality.comparison_minimum_events
        if stable.events < minimum_events:
            return
        stable_p99 = stable.latency_quantile(self.latency, 0.99)
        for series, candidate in whole.items():
            if series.deployment == "stable" or candidate.events < minimum_events:
                continue
            base = (model, series.version, series.deployment, window_name)

            def emit(
                metric: str,
                label_class: str,
                a: _Proportion,
                b: _Proportion,
                base: tuple[str, ...] = base,
            ) -> None:
                if math.isnan(a.value) or math.isnan(b.value):
                    return
                labels = (*base, metric, label_class)
                snapshot.add(names.CANARY_DIFFERENCE, labels, a.value - b.value)
                p_value = two_proportion_p_value(a.successes, a.trials, b.successes, b.trials)
                snapshot.add(names.CANARY_P_VALUE, labels, p_value)

            emit(
                "error_ratio",
                "",
                _Proportion(candidate.counter(Metric.ERRORS), candidate.events),
                _Proportion(stable.counter(Metric.ERRORS), stable.events),
            )
            emit(
                "low_confidence_ratio",
                "",
                _low_confidence(candidate),
                _low_confidence(stable),
            )
            p99 = candidate.latency_quantile(self.latency, 0.99)
            if not (math.isnan(p99) or math.isnan(stable_p99)):
                difference_s = (p99 - stable_p99) / 1000
                snapshot.add(
                    names.CANARY_DIFFERENCE, (*base, "latency_p99_seconds", ""), difference_s
                )
            minimum_labelled = self.config.quality.minimum_labelled
            labelled = min(candidate.counter(Metric.LABELLED), stable.counter(Metric.LABELLED))
            if settings.kind is LabelKind.REGRESSION or labelled < minimum_labelled:
                continue
            emit("accuracy", "", _accuracy(candidate), _accuracy(stable))
            for label_class in settings.positive_classes:
                mine, theirs = _confusion(candidate, label_class), _confusion(stable, label_class)
                emit(
                    "precision",
                    label_class,
                    _Proportion(mine.true_positive, mine.predicted_positive),
                    _Proportion(theirs.true_positive, theirs.predicted_positive),
                )
                emit(
                    "recall",
                    label_class,
                    _Proportion(mine.true_positive, mine.actual_positive),
                    _Proportion(theirs.true_positive, theirs.actual_positive),
                )

    # --- segments -----------------------------------------------------------------------------

    def _segments(
        self,
        model: str,
        window_name: str,
        by_series: Mapping[Series, SeriesWindow],
        settings: ModelLabelsConfig,
        snapshot: Snapshot,
    ) -> None:
        quality = self.config.quality
        reference = self.reference_for(model)
        groups: dict[tuple[str, str, str], list[tuple[Series, SeriesWindow]]] = defaultdict(list)
        for series, window in by_series.items():
            if series.segment:
                attribute = series.segment.split("=", 1)[0]
                groups[(series.version, series.deployment, attribute)].append((series, window))
        for (version, deployment, _), members in groups.items():
            whole = by_series.get(Series(version, deployment))
            whole_events = 0 if whole is None else whole.events
            # figure name, class -> per member: the value or None (not enough data)
            figures: dict[tuple[str, str], list[float | None]] = defaultdict(list)
            for series, window in members:
                series_labels = (model, *series, window_name)
                share = proportion(window.events, whole_events)
                snapshot.add(names.SEGMENT_SHARE, series_labels, share)
                if reference is not None and series.segment in reference.segment_shares:
                    snapshot.add(
                        names.SEGMENT_SHARE_DIFFERENCE,
                        series_labels,
                        share - reference.segment_shares[series.segment],
                    )
                enough_events = window.events >= quality.minimum_segment_events
                figures[("error_ratio", "")].append(
                    1 - window.error_ratio if enough_events else None
                )
                if settings.kind is LabelKind.REGRESSION:
                    continue
                labelled = window.counter(Metric.LABELLED)
                figures[("accuracy", "")].append(
                    proportion(window.counter(Metric.CORRECT), labelled)
                    if labelled >= quality.minimum_labelled
                    else None
                )
                for label_class in settings.positive_classes:
                    predicted = window.counter(class_metric(Metric.PREDICTED, label_class))
                    figures[("positive_prediction_rate", label_class)].append(
                        proportion(predicted, window.events) if enough_events else None
                    )
                    counts = _confusion(window, label_class)
                    figures[("precision", label_class)].append(
                        counts.precision
                        if counts.predicted_positive >= quality.minimum_labelled
                        else None
                    )
                    figures[("recall", label_class)].append(
                        counts.recall
                        if counts.actual_positive >= quality.minimum_labelled
                        else None
                    )
            for (metric, label_class), values in figures.items():
                known = [v for v in values if v is not None and not math.isnan(v)]
                best = max(known) if known else math.nan
                for (series, _), value in zip(members, values, strict=True):
                    labels = (model, *series, window_name, metric, label_class)
                    if value is None or math.isnan(value) or not known:
                        snapshot.add(names.DISPARITY_NODATA, labels, 1.0)
                        continue
                    snapshot.add(names.DISPARITY_NODATA, labels, 0.0)
                    snapshot.add(names.DISPARITY_RATIO, labels, proportion(value, best))
                    snapshot.add(names.DISPARITY_DIFFERENCE, labels, value - best)

    # --- lifetime -----------------------------------------------------------------------------

    def _lifetime(self, model: str, snapshot: Snapshot) -> None:
        refused: dict[str, int] = defaultdict(int)
        prefix = class_metric(Metric.LABELS_REFUSED, "")
        for name, count in self.store.totals(model).items():
            series, metric = split_field(name)
            if metric == Metric.LABELS:
                snapshot.add(names.LABELS_TOTAL, (model, *series), count)
            elif metric.startswith(prefix):
                refused[metric[len(prefix) :]] += count
        for reason, count in sorted(refused.items()):
            snapshot.add(names.LABELS_REFUSED_TOTAL, (model, reason), count)


def _low_confidence(window: SeriesWindow) -> _Proportion:
    return _Proportion(
        window.counter(Metric.LOW_CONFIDENCE), window.counter(Metric.CONFIDENCE_COUNT)
    )


def _accuracy(window: SeriesWindow) -> _Proportion:
    return _Proportion(window.counter(Metric.CORRECT), window.counter(Metric.LABELLED))


def _confusion(window: SeriesWindow, label_class: str) -> ConfusionCounts:
    return ConfusionCounts(
        true_positive=window.counter(class_metric(Metric.TRUE_POSITIVE, label_class)),
        false_positive=window.counter(class_metric(Metric.FALSE_POSITIVE, label_class)),
        false_negative=window.counter(class_metric(Metric.FALSE_NEGATIVE, label_class)),
    )
