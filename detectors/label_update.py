"""Turn one model's joined labels into window increments, with numpy: the confusion counts.

The labels consumer (``consumers.label_batching``) hands over a :class:`LabelBatch`: per label its
Kafka position, the prediction it judges (value, time, confidence, series) and the label, and an
outcome: ``""`` when the label counts, else the reason it does not (``duplicate``,
``beyond_horizon``, ...). :func:`build_label_update` returns a
:class:`~detectors.window_update.WindowUpdate` in the labels checkpoint space, applied atomically
like an events update.

**Labels land in the bucket of the prediction's time**, not the label's: a window's precision then
describes the predictions made in that window (the model as it was), label coverage is labelled /
predicted over the same predictions, and a label arriving two hours late corrects the window it
belongs to instead of blaming the current one. The cost: a window's quality keeps filling in as
its labels arrive, which coverage and the minimum-labels rule account for.

Counts per series and bucket (``detectors.series.Metric``): ``labelled``, ``correct``; per
positive class ``true_positive@c``, ``false_positive@c``, ``false_negative@c``; the
``label_delay`` sketch (seconds, :data:`LABEL_DELAY_MAPPING`); ``labelled_confidence`` and
``correct_confidence`` histograms (what calibrates the label-free estimate); for regression the
exact integer sums ``absolute_error_sum`` and ``squared_error_sum`` in units of the model's
``error_resolution``.

>>> import numpy as np
>>> from detectors.series import Series
>>> from detectors.window_update import WindowLayout
>>> batch = LabelBatch.classification(
...     "fraud", partitions=[0, 0, 0], offsets=[5, 6, 7], event_ids=["a", "b", "a"],
...     outcomes=["", "", "duplicate"], prediction_ms=[60_000, 61_000, 60_000],
...     label_ms=[90_000, 61_500, 95_000], predicted=["fraud", "ok", "fraud"],
...     actual=["fraud", "fraud", "fraud"], confidence=[0.9, 0.6, 0.9],
...     series=[Series("v1", "stable")], row_label=[0, 1, 2], row_series=[0, 0, 0],
...     marker_expire_at_ms=[10**13] * 3)
>>> update = build_label_update(batch, WindowLayout(), 10, ("fraud",), 0.001, now_ms=120_000)
>>> fields = update.buckets[60_000]
>>> [fields[f"v1|stable||{name}"] for name in ("labelled", "correct", "true_positive@fraud",
...                                            "false_negative@fraud")]
[2, 1, 1, 1]
>>> sorted(update.totals.items())
[('v1|stable||labels', 2), ('v1|stable||labels_refused@duplicate', 1)]
>>> [event_id for event_id, _ in update.markers]
['a', 'b']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from detectors.latency_sketch import LogBucketMapping
from detectors.series import Metric, Series, class_metric
from detectors.window_update import (
    BoolArray,
    FloatArray,
    IntArray,
    WindowLayout,
    WindowUpdate,
    _cells,
    partition_ranges,
)

__all__ = [
    "LABELS_CHECKPOINT_SPACE",
    "LABEL_DELAY_MAPPING",
    "LabelBatch",
    "build_label_update",
    "confidence_bins_of",
]

LABELS_CHECKPOINT_SPACE = "labels"
"""The checkpoint space of labels-topic offsets (``WindowUpdate.checkpoint_space``)."""

LABEL_DELAY_MAPPING = LogBucketMapping(relative_accuracy=0.02, minimum_ms=0.001)
"""Label delay sketch, in *seconds* (the mapping is unit-free): quantiles within 2 %."""


def confidence_bins_of(confidence: FloatArray, bins: int) -> IntArray:
    """The events consumer's confidence bin: ``floor(c * bins)``, the top bin closed."""
    binned: IntArray = np.minimum((np.nan_to_num(confidence) * bins).astype(np.int64), bins - 1)
    return binned


@dataclass
class LabelBatch:
    """One model's labels from one consumer batch, as columns (one row per label message).

    ``row_label``/``row_series`` list every (label, series) pair, as ``ModelBatch`` does: a label
    counts in its prediction's whole-traffic series and in each segment series it was counted in.
    Classification uses ``predicted``/``actual`` (category strings); regression
    ``predicted_value``/``actual_value``. ``prediction_ms`` is the label's own time when the
    prediction's is unknown (labels that carry their prediction); ``delay_known`` says which.
    """

    model: str
    regression: bool
    partitions: npt.NDArray[np.int32]
    offsets: IntArray
    event_ids: list[str]
    outcomes: list[str]
    prediction_ms: IntArray
    label_ms: IntArray
    delay_known: BoolArray
    predicted: list[str]
    actual: list[str]
    predicted_value: FloatArray
    actual_value: FloatArray
    confidence: FloatArray
    series: list[Series]
    row_label: IntArray
    row_series: IntArray
    marker_expire_at_ms: IntArray

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def classification(
        cls,
        model: str,
        *,
        partitions: Sequence[int],
        offsets: Sequence[int],
        event_ids: list[str],
        outcomes: list[str],
        prediction_ms: Sequence[int],
        label_ms: Sequence[int],
        predicted: list[str],
        actual: list[str],
        confidence: Sequence[float],
        series: list[Series],
        row_label: Sequence[int],
        row_series: Sequence[int],
        marker_expire_at_ms: Sequence[int],
    ) -> LabelBatch:
        """A classification batch from plain sequences (tests and doctests)."""
        count = len(offsets)
        return cls(
            model=model,
            regression=False,
            partitions=np.asarray(partitions, dtype=np.int32),
            offsets=np.asarray(offsets, dtype=np.int64),
            event_ids=event_ids,
            outcomes=outcomes,
            prediction_ms=np.asarray(prediction_ms, dtype=np.int64),
            label_ms=np.asarray(label_ms, dtype=np.int64),
            delay_known=np.ones(count, dtype=np.bool_),
            predicted=predicted,
            actual=actual,
            predicted_value=np.full(count, np.nan),
            actual_value=np.full(count, np.nan),
            confidence=np.asarray(confidence, dtype=np.float64),
            series=series,
            row_label=np.asarray(row_label, dtype=np.int64),
            row_series=np.asarray(row_series, dtype=np.int64),
            marker_expire_at_ms=np.asarray(marker_expire_at_ms, dtype=np.int64),
        )

    def select(self, keep: BoolArray) -> LabelBatch:
        """The labels where ``keep`` is true (drops offsets a store already applied)."""
        new_index = np.cumsum(keep) - 1
        keep_rows = keep[self.row_label]
        kept = np.flatnonzero(keep).tolist()
        return replace(
            self,
            partitions=self.partitions[keep],
            offsets=self.offsets[keep],
            event_ids=[self.event_ids[i] for i in kept],
            outcomes=[self.outcomes[i] for i in kept],
            prediction_ms=self.prediction_ms[keep],
            label_ms=self.label_ms[keep],
            delay_known=self.delay_known[keep],
            predicted=[self.predicted[i] for i in kept],
            actual=[self.actual[i] for i in kept],
            predicted_value=self.predicted_value[keep],
            actual_value=self.actual_value[keep],
            confidence=self.confidence[keep],
            row_label=new_index[self.row_label[keep_rows]],
            row_series=self.row_series[keep_rows],
            marker_expire_at_ms=self.marker_expire_at_ms[keep],
        )

    def with_duplicates(self, event_ids: frozenset[str]) -> LabelBatch:
        """The same labels, those of ``event_ids`` that were to count now counted as duplicates."""
        outcomes = [
            "duplicate" if outcome == "" and event_id in event_ids else outcome
            for event_id, outcome in zip(self.event_ids, self.outcomes, strict=True)
        ]
        return replace(self, outcomes=outcomes)


def build_label_update(
    batch: LabelBatch,
    layout: WindowLayout,
    confidence_bins: int,
    positive_classes: Sequence[str],
    error_resolution: float,
    now_ms: int,
) -> WindowUpdate:
    """Bin ``batch`` into per-bucket increments of the buckets of its predictions' times.

    Counted labels whose prediction is older than the rollup retention count in the lifetime
    totals (``labels``, ``late_labels``) and in no window: their buckets are gone.
    """
    ranges = partition_ranges(batch.partitions, batch.offsets)
    totals: dict[str, int] = defaultdict(int)
    buckets: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if len(batch) == 0:
        return WindowUpdate(batch.model, ranges, {}, {}, 0, LABELS_CHECKPOINT_SPACE)
    series_keys = [series.key for series in batch.series]
    counted = np.fromiter((not outcome for outcome in batch.outcomes), np.bool_, len(batch))

    # Reasons are counted once per label, in its whole-traffic series (its one unsegmented row).
    is_base = np.fromiter((not s.segment for s in batch.series), np.bool_, len(batch.series))
    base_rows = np.flatnonzero(is_base[batch.row_series])
    base_series = np.zeros(len(batch), dtype=np.int64)
    base_series[batch.row_label[base_rows]] = batch.row_series[base_rows]
    for index in np.flatnonzero(~counted).tolist():
        key = series_keys[int(base_series[index])]
        totals[f"{key}|{class_metric(Metric.LABELS_REFUSED, batch.outcomes[index])}"] += 1

    late = batch.prediction_ms < layout.oldest_accepted_ms(now_ms)
    for series_index, _, count in _cells(batch.row_series[counted[batch.row_label]], None):
        totals[f"{series_keys[series_index]}|{Metric.LABELS}"] += count
    late_rows = (counted & late)[batch.row_label]
    for series_index, _, count in _cells(batch.row_series[late_rows], None):
        totals[f"{series_keys[series_index]}|{Metric.LATE_LABELS}"] += count

    live = counted & ~late
    live_rows = live[batch.row_label]
    row_label = batch.row_label[live_rows]
    if len(row_label):
        starts = batch.prediction_ms - batch.prediction_ms % layout.bucket_ms
        bucket_values, bucket_of_label = np.unique(starts[live], return_inverse=True)
        bucket_index = np.zeros(len(batch), dtype=np.int64)
        bucket_index[live] = bucket_of_label
        bucket_starts = bucket_values.tolist()
        group = batch.row_series[live_rows] * len(bucket_starts) + bucket_index[row_label]

        def add(metric: str, rows: BoolArray | None, bins: IntArray | None = None) -> None:
            chosen = group if rows is None else group[rows]
            chosen_bins = None if bins is None else (bins if rows is None else bins[rows])
            for cell, suffix, count in _cells(chosen, chosen_bins):
                series_index, bucket = divmod(cell, len(bucket_starts))
                name = f"{series_keys[series_index]}|{metric}{suffix}"
                buckets[bucket_starts[bucket]][name] += count

        def add_sums(metric: str, values: IntArray) -> None:
            sums = np.zeros(len(series_keys) * len(bucket_starts), dtype=np.int64)
            np.add.at(sums, group, values)
            for cell in np.flatnonzero(sums).tolist():
                series_index, bucket = divmod(cell, len(bucket_starts))
                name = f"{series_keys[series_index]}|{metric}"
                buckets[bucket_starts[bucket]][name] += int(sums[cell])

        add(Metric.LABELLED, None)
        delay_s = (batch.label_ms - batch.prediction_ms).astype(np.float64) / 1000
        delay_bins = LABEL_DELAY_MAPPING.bucket_of(np.maximum(delay_s, 0.0))[row_label]
        add(Metric.LABEL_DELAY, batch.delay_known[row_label], delay_bins)
        if batch.regression:
            # Only counted rows: refused ones may hold nan, or errors too large for an int64.
            error = np.abs(batch.predicted_value - batch.actual_value)[row_label] / error_resolution
            add_sums(Metric.ABSOLUTE_ERROR_SUM, np.rint(error).astype(np.int64))
            add_sums(Metric.SQUARED_ERROR_SUM, np.rint(error * error).astype(np.int64))
        else:
            predicted = np.asarray(batch.predicted, dtype=object)
            actual = np.asarray(batch.actual, dtype=object)
            correct = (predicted == actual)[row_label]
            add(Metric.CORRECT, correct)
            has_confidence = ~np.isnan(batch.confidence[row_label])
            bins = confidence_bins_of(batch.confidence, confidence_bins)[row_label]
            add(Metric.LABELLED_CONFIDENCE, has_confidence, bins)
            add(Metric.CORRECT_CONFIDENCE, has_confidence & correct, bins)
            for label_class in positive_classes:
                said = (predicted == label_class)[row_label]
                true = (actual == label_class)[row_label]
                add(class_metric(Metric.TRUE_POSITIVE, label_class), said & true)
                add(class_metric(Metric.FALSE_POSITIVE, label_class), said & ~true)
                add(class_metric(Metric.FALSE_NEGATIVE, label_class), ~said & true)

    markers = [
        (batch.event_ids[index], int(batch.marker_expire_at_ms[index]))
        for index in np.flatnonzero(counted).tolist()
    ]
    return WindowUpdate(
        model=batch.model,
        ranges=ranges,
        buckets={start: dict(fields) for start, fields in buckets.items() if fields},
        totals=dict(totals),
        newest_event_ms=0,
        checkpoint_space=LABELS_CHECKPOINT_SPACE,
        markers=markers,
    )
