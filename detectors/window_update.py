"""Turn one model's share of a consumer batch into window increments, with numpy.

The consumer hands over a :class:`ModelBatch` (columns, one row per event); this module bins
latency, confidence, errors (and feature values, when a binner is given) per series and time
bucket, and returns a :class:`WindowUpdate`: the hash-field increments of each touched bucket, the
lifetime totals, and the offset range per partition that the update covers. A window store applies
a :class:`WindowUpdate` atomically, together with that offset range.

Per-event work is numpy only; Python loops run over distinct (series, bucket, bin) cells, of which a
batch has hundreds, not over events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from detectors.latency_sketch import LogBucketMapping
from detectors.prediction_record import PredictionColumns, join_records, shadow_records
from detectors.sequential_detector import SequentialAlarm
from detectors.series import Metric, Series, class_metric

__all__ = [
    "Binning",
    "FeatureBinner",
    "ModelBatch",
    "PartitionRange",
    "SequentialWrite",
    "WindowLayout",
    "WindowUpdate",
    "build_window_update",
    "feature_metric",
    "prediction_metric",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class WindowLayout:
    """Bucket widths and windows, in milliseconds.

    Buckets of ``bucket_ms`` serve windows shorter than ``rollup_threshold_ms``; rollups of
    ``rollup_ms`` serve the others, so a one-hour window is 60 reads, not 360. Each level keeps
    its keys for as long as the longest window it serves, plus one bucket and the late tolerance.
    ``fast_ms`` is the drift-only fast window (``drift.fast_window_seconds``; 0: none).
    """

    bucket_ms: int = 10_000
    rollup_ms: int = 60_000
    short_ms: int = 300_000
    long_ms: int = 3_600_000
    late_tolerance_ms: int = 0
    fast_ms: int = 0

    @property
    def windows_ms(self) -> tuple[int, ...]:
        """Every window read from this layout: the fast one (if any), short and long."""
        fast = (self.fast_ms,) if self.fast_ms else ()
        return (*fast, self.short_ms, self.long_ms)

    @property
    def rollup_threshold_ms(self) -> int:
        return 10 * self.rollup_ms

    def width_for(self, window_ms: int) -> int:
        """The bucket width a window of ``window_ms`` is read from."""
        return self.rollup_ms if window_ms >= self.rollup_threshold_ms else self.bucket_ms

    def retention_ms(self, width_ms: int) -> int:
        served = [w for w in self.windows_ms if self.width_for(w) == width_ms]
        return (max(served) if served else 0) + width_ms + self.late_tolerance_ms

    def bucket_starts(self, window_ms: int, now_ms: int) -> list[int]:
        """Start times of the buckets that make up the window ending at ``now_ms``.

        The window is the ``window_ms / width`` most recent buckets, the current (partial) one
        included, so it covers between ``window_ms - width`` and ``window_ms`` of event time.
        """
        width = self.width_for(window_ms)
        newest = now_ms - now_ms % width
        count = max(1, window_ms // width)
        return [newest - i * width for i in range(count)]

    def oldest_accepted_ms(self, now_ms: int) -> int:
        """Events stamped before this would land only in buckets no window reads any more.

        Only the levels that serve a window count: with every window read from buckets, the
        rollups (written all the same) keep nothing a window needs.
        """
        serving = {self.width_for(window_ms) for window_ms in self.windows_ms}
        return now_ms - max(self.retention_ms(width) - width for width in serving)


class FeatureBinner(Protocol):
    """Bins a batch's feature values with a reference's edges (see ``detectors.reference``)."""

    @property
    def field_tag(self) -> str:
        """Id of the bins (the reference's); part of every field name, so windows never add up
        bins of two different references (see :func:`feature_metric`)."""
        ...

    def bin_features(
        self,
        features: Sequence[Mapping[str, object]],
        numeric_values: FloatArray | None = None,
    ) -> Mapping[str, IntArray]:
        """Bin index of every event for each watched feature (same order as ``features``);
        ``numeric_values``: the numeric features' values, one column each, when the caller
        already has them (``Reference.numeric_values``)."""
        ...

    def bin_predictions(self, predictions: Sequence[object]) -> IntArray | None:
        """Bin index of every event's prediction, or ``None`` when predictions are not watched."""
        ...


@dataclass(frozen=True)
class Binning:
    """How raw values become bins; fixed for the life of a process."""

    latency: LogBucketMapping = field(default_factory=LogBucketMapping)
    confidence_bins: int = 20
    low_confidence_threshold: float = 0.5


@dataclass
class ModelBatch:
    """One model's events from one consumer batch, as columns.

    ``row_event`` and ``row_series`` list every (event, series) pair: each event counts for its
    version's whole-traffic series and once more per configured segment attribute it carries.
    """

    model: str
    partitions: npt.NDArray[np.int32]
    offsets: IntArray
    timestamps_ms: IntArray
    latency_ms: FloatArray
    confidence: FloatArray
    errors: BoolArray
    series: list[Series]
    row_event: IntArray
    row_series: IntArray
    features: Sequence[Mapping[str, object]] = field(default_factory=list)
    predictions: Sequence[object] = field(default_factory=list)
    prediction_columns: PredictionColumns | None = None
    """Ids and predictions of models with a ``labels`` section (``detectors.prediction_record``)."""

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, keep: BoolArray) -> ModelBatch:
        """The events where ``keep`` is true (used to drop offsets a store already applied)."""
        new_index = np.cumsum(keep) - 1
        keep_rows = keep[self.row_event]
        kept = np.flatnonzero(keep).tolist()
        return ModelBatch(
            model=self.model,
            partitions=self.partitions[keep],
            offsets=self.offsets[keep],
            timestamps_ms=self.timestamps_ms[keep],
            latency_ms=self.latency_ms[keep],
            confidence=self.confidence[keep],
            errors=self.errors[keep],
            series=self.series,
            row_event=new_index[self.row_event[keep_rows]],
            row_series=self.row_series[keep_rows],
            features=[self.features[i] for i in kept] if self.features else [],
            predictions=[self.predictions[i] for i in kept] if self.predictions else [],
            prediction_columns=(
                None if self.prediction_columns is None else self.prediction_columns.select(keep)
            ),
        )


@dataclass(frozen=True)
class PartitionRange:
    """The offsets of one partition an update covers.

    ``known_applied_offset`` is what the writer last saw applied there (-1: nothing known); a
    store whose checkpoint is below it has lost state and refuses the update.
    """

    partition: int
    first_offset: int
    last_offset: int
    known_applied_offset: int = -1


@dataclass(frozen=True)
class SequentialWrite:
    """One partition's new sequential state (``detectors.sequential_detector.PartitionState``,
    JSON), to be written only if the stored state still covers ``expected_offset`` (-1: none
    stored), so that two writers never both build on the same state."""

    partition: int
    expected_offset: int
    offset: int
    state: str


@dataclass
class WindowUpdate:
    """Everything one atomic store write carries for one model.

    ``buckets`` maps a bucket start (ms, at ``bucket_ms`` width) to field increments; a store adds
    the same increments to the rollup that contains the bucket.

    Labels (``consumers.label_writer``) use the rest: ``checkpoint_space`` keeps the labels
    topic's offsets apart from the events topic's; ``markers`` are ``(event_id, expire-at ms)`` of
    the labels counted, and the store refuses the whole update if any is already marked (a
    duplicate label). ``join_records`` are ``(event_id, record, expire-at ms)`` of predictions for
    the label join, written before the checkpoint moves.
    """

    model: str
    ranges: list[PartitionRange]
    buckets: dict[int, dict[str, int]]
    totals: dict[str, int]
    newest_event_ms: int
    checkpoint_space: str = ""
    markers: list[tuple[str, int]] = field(default_factory=list)
    join_records: list[tuple[str, bytes, int]] = field(default_factory=list)
    shadow_records: list[tuple[str, bytes, int, int]] = field(default_factory=list)
    """``(event_id, record, expire-at ms, event ms)`` of shadow predictions: written beside the
    join records, under their own keys, and indexed by time for the rollout gate."""
    sequential_writes: list[SequentialWrite] = field(default_factory=list)
    sequential_alarms: list[SequentialAlarm] = field(default_factory=list)
    sequential_hold_ms: int = 0
    """An alarm more than this after the previous one of its feature starts a new episode."""


def partition_ranges(partitions: npt.NDArray[np.int32], offsets: IntArray) -> list[PartitionRange]:
    ranges = []
    for partition in np.unique(partitions).tolist():
        mine = offsets[partitions == partition]
        ranges.append(PartitionRange(int(partition), int(mine.min()), int(mine.max())))
    return ranges


def build_window_update(
    batch: ModelBatch,
    layout: WindowLayout,
    binning: Binning,
    now_ms: int,
    feature_binner: FeatureBinner | None = None,
    numeric_values: FloatArray | None = None,
) -> WindowUpdate:
    """Bin ``batch`` into per-bucket field increments (``numeric_values``: passed on to
    :meth:`FeatureBinner.bin_features`).

    Events older than the rollup retention (``layout.oldest_accepted_ms``) count in the lifetime
    totals and as ``late_events``, not in any window: their buckets are gone.
    """
    totals: dict[str, int] = defaultdict(int)
    buckets: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ranges = partition_ranges(batch.partitions, batch.offsets)
    if len(batch) == 0:
        return WindowUpdate(batch.model, ranges, {}, {}, 0)

    late = batch.timestamps_ms < layout.oldest_accepted_ms(now_ms)
    series_keys = [series.key for series in batch.series]
    for series_index, _, count in _cells(batch.row_series, None):
        totals[f"{series_keys[series_index]}|{Metric.EVENTS}"] += count
    for series_index, _, count in _cells(batch.row_series[late[batch.row_event]], None):
        totals[f"{series_keys[series_index]}|{Metric.LATE_EVENTS}"] += count

    starts = batch.timestamps_ms - batch.timestamps_ms % layout.bucket_ms
    bucket_values, bucket_of_event = np.unique(starts, return_inverse=True)
    bucket_starts = bucket_values.tolist()
    live_rows = ~late[batch.row_event]
    row_event = batch.row_event[live_rows]
    row_series = batch.row_series[live_rows]
    row_bucket = bucket_of_event[row_event]
    group = row_series * len(bucket_starts) + row_bucket

    def add(metric: str, rows: BoolArray | None, bins: IntArray | None) -> None:
        chosen_group = group if rows is None else group[rows]
        chosen_bins = None if bins is None else (bins if rows is None else bins[rows])
        for cell_group, suffix, count in _cells(chosen_group, chosen_bins):
            series_index, bucket_index = divmod(cell_group, len(bucket_starts))
            buckets[bucket_starts[bucket_index]][
                f"{series_keys[series_index]}|{metric}{suffix}"
            ] += count

    add(Metric.EVENTS, None, None)
    errors = batch.errors[row_event]
    add(Metric.ERRORS, errors, None)

    latency = batch.latency_ms[row_event]
    has_latency = ~np.isnan(latency)
    add(Metric.LATENCY_COUNT, has_latency, None)
    latency_bins = np.zeros(len(latency), dtype=np.int64)
    latency_bins[has_latency] = binning.latency.bucket_of(latency[has_latency])
    add(Metric.LATENCY, has_latency, latency_bins)

    confidence = batch.confidence[row_event]
    has_confidence = ~np.isnan(confidence)
    add(Metric.CONFIDENCE_COUNT, has_confidence, None)
    add(
        Metric.LOW_CONFIDENCE,
        has_confidence & (confidence < binning.low_confidence_threshold),
        None,
    )
    confidence_bins = np.minimum(
        (np.nan_to_num(confidence) * binning.confidence_bins).astype(np.int64),
        binning.confidence_bins - 1,
    )
    add(Metric.CONFIDENCE, has_confidence, confidence_bins)
    # Integer micro-units keep sums exact under HINCRBY and identical in every store.
    micros = np.rint(np.nan_to_num(confidence) * 1_000_000).astype(np.int64)
    _add_sums(buckets, bucket_starts, series_keys, group, micros, Metric.CONFIDENCE_SUM_MICROS)

    if batch.prediction_columns is not None:
        for label_class, predicted in batch.prediction_columns.predicted.items():
            chosen = predicted[row_event]
            add(class_metric(Metric.PREDICTED, label_class), chosen, None)
            add(
                class_metric(Metric.PREDICTED_CONFIDENCE, label_class),
                chosen & has_confidence,
                confidence_bins,
            )

    if feature_binner is not None and batch.features:
        tag = feature_binner.field_tag
        for feature, bins in feature_binner.bin_features(batch.features, numeric_values).items():
            add(feature_metric(tag, feature), None, bins[row_event])
        prediction_bins = feature_binner.bin_predictions(batch.predictions)
        if prediction_bins is not None:
            add(prediction_metric(tag), None, prediction_bins[row_event])

    live_times = batch.timestamps_ms[~late]
    newest = int(live_times.max()) if len(live_times) else 0
    return WindowUpdate(
        model=batch.model,
        ranges=ranges,
        buckets={start: dict(fields) for start, fields in buckets.items()},
        totals=dict(totals),
        newest_event_ms=newest,
        join_records=join_records(batch, now_ms),
        shadow_records=shadow_records(batch, now_ms),
    )


def feature_metric(field_tag: str, feature: str) -> str:
    """The histogram metric of ``feature`` binned with the bins tagged ``field_tag``."""
    return f"{Metric.FEATURE}:{field_tag}:{feature}"


def prediction_metric(field_tag: str) -> str:
    """The histogram metric of the prediction binned with the bins tagged ``field_tag``."""
    return f"{Metric.PREDICTION}:{field_tag}"


def _cells(group: IntArray, bins: IntArray | None) -> list[tuple[int, str, int]]:
    """Count rows per (group, bin): ``(group, metric suffix, count)`` for each non-empty cell."""
    if len(group) == 0:
        return []
    if bins is None:
        cells, counts = np.unique(group, return_counts=True)
        return [(g, "", c) for g, c in zip(cells.tolist(), counts.tolist(), strict=True)]
    lowest = int(bins.min())
    span = int(bins.max()) - lowest + 1
    cells, counts = np.unique(group * span + (bins - lowest), return_counts=True)
    return [
        (g, f":{b}", c)
        for g, b, c in zip(
            (cells // span).tolist(), (cells % span + lowest).tolist(), counts.tolist(), strict=True
        )
    ]


def _add_sums(
    buckets: dict[int, dict[str, int]],
    bucket_starts: list[int],
    series_keys: list[str],
    group: IntArray,
    values: IntArray,
    metric: str,
) -> None:
    sums = np.bincount(group, weights=values.astype(np.float64))
    bucket_count = len(bucket_starts)
    for cell_group in np.flatnonzero(sums).tolist():
        series_index, bucket_index = divmod(cell_group, bucket_count)
        field_key = f"{series_keys[series_index]}|{metric}"
        buckets[bucket_starts[bucket_index]][field_key] += round(float(sums[cell_group]))
