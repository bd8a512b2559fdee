"""Build a :class:`~detectors.reference.Reference` from events, or freeze one from a live window.

:class:`ReferenceBuilder` takes decoded events a batch at a time (``add``) and, once, builds the
reference (``build``): numeric features get equal-mass quantile edges (``bins`` of them, fewer when
values repeat), categorical ones their ``top_k`` most frequent categories; the prediction and the
confidence get references of their own. The reference's counts are its own events binned with
those bins, by the same code the consumer bins live traffic with.

A feature's kind comes from the model's configuration (``models.<model>.features``) when given;
otherwise a feature whose values are all numbers is numeric and any other is categorical.

:func:`freeze_window` keeps an existing reference's bins and replaces its counts with a live
window's ("the last hour of v41 is the new normal").

>>> from driftline.events import decode_event
>>> builder = ReferenceBuilder("fraud", bins=4)
>>> builder.add([decode_event(
...     b'{"event_id": "e%d", "ts": 0, "model": "fraud", "version": "v1", "confidence": 0.9,'
...     b' "prediction": "ok", "features": {"amount": %d, "country": "%s"}}'
...     % (i, i, b"DE" if i % 3 else b"FR")) for i in range(100)])
100
>>> reference = builder.build(created_at_ms=0)
>>> amount = reference.features[0]
>>> amount.edges, amount.counts
((0.0, 24.0, 49.0, 74.0, 99.0), (0, 0, 24, 25, 25, 26, 0))
>>> reference.features[1].categories, reference.features[1].counts
(('DE', 'FR'), (0, 0, 66, 34))
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from detectors.reference import (
    CONFIDENCE_ITEM,
    MISSING_BIN,
    PREDICTION_ITEM,
    FeatureKind,
    FeatureReference,
    FloatArray,
    IntArray,
    Reference,
    ReferenceFormatError,
    category_key,
    numeric_column,
)
from detectors.series import Metric
from detectors.window_summary import SeriesWindow
from detectors.window_update import feature_metric, prediction_metric
from driftline.events import InferenceEvent, InvalidEvent, decode_features

__all__ = ["ReferenceBuilder", "confidence_bin_of", "freeze_window", "window_counts"]


def confidence_bin_of(confidence: FloatArray, confidence_bins: int) -> IntArray:
    """The consumer's confidence bin (``detectors.window_update``): ``floor(c * bins)``, capped."""
    bins: IntArray = np.minimum(
        (np.nan_to_num(confidence) * confidence_bins).astype(np.int64), confidence_bins - 1
    )
    return bins


class _Column:
    """Everything seen of one feature: numbers, other values by category, and how often."""

    def __init__(self) -> None:
        # 8 bytes a number (a list of floats takes 32): references are built from big files.
        self.numbers = array("d")
        self.others: Counter[str] = Counter()
        self.present = 0

    def add(self, values: Iterable[object]) -> None:
        for value in values:
            if value is None:
                continue
            self.present += 1
            if type(value) is float or type(value) is int:
                self.numbers.append(float(value))
            else:
                key = category_key(value)
                if key is not None:
                    self.others[key] += 1


class ReferenceBuilder:
    """Accumulates one model's events and builds its reference once.

    Hyperparameters are public attributes, checked here: ``bins`` (quantile bins per numeric
    feature, >= 2), ``top_k`` (categories kept, >= 1), ``max_features`` (the most frequent features
    are kept), ``confidence_bins`` (must equal ``monitoring.confidence_bins`` of the consumers).
    """

    def __init__(
        self,
        model: str,
        *,
        version: str | None = None,
        feature_types: Mapping[str, FeatureKind | str] | None = None,
        bins: int = 20,
        top_k: int = 20,
        max_features: int = 100,
        confidence_bins: int = 20,
    ) -> None:
        for name, value, lowest in (
            ("bins", bins, 2),
            ("top_k", top_k, 1),
            ("max_features", max_features, 1),
            ("confidence_bins", confidence_bins, 2),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
        self.model = model
        self.version = version
        self.feature_types = {
            name: FeatureKind(kind) for name, kind in (feature_types or {}).items()
        }
        self.bins = bins
        self.top_k = top_k
        self.max_features = max_features
        self.confidence_bins = confidence_bins
        self.events = 0
        self.refused = 0
        self._features: dict[str, _Column] = defaultdict(_Column)
        self._prediction = _Column()
        self._confidence = array("d")

    def add(self, events: Iterable[InferenceEvent]) -> int:
        """Take the events of this model (and version, if one was given); return how many.

        Events whose ``features`` cannot be parsed are refused (counted in ``refused``), as the
        consumer refuses them.
        """
        taken = [
            event
            for event in events
            if event.model == self.model and (self.version is None or event.version == self.version)
        ]
        columns: dict[str, list[object]] = defaultdict(list)
        kept = []
        for event in taken:
            features = decode_features(event.features)
            if isinstance(features, InvalidEvent):
                # The consumer refuses such an event too, so the reference must not count it.
                self.refused += 1
                continue
            kept.append(event)
            for name, value in features.items():
                columns[name].append(value)
        taken = kept
        if not taken:
            return 0
        self.events += len(taken)
        for name, values in columns.items():
            self._features[name].add(values)
        self._prediction.add(event.prediction for event in taken)
        self._confidence.extend(e.confidence for e in taken if e.confidence is not None)
        return len(taken)

    def build(self, *, created_at_ms: int, source: str = "") -> Reference:
        """The reference of everything added so far."""
        if self.events == 0:
            target = self.model if self.version is None else f"{self.model} {self.version}"
            raise ReferenceFormatError(f"no events of {target} to build a reference from")
        reserved = sorted(name for name in self._features if name.startswith("@"))
        if reserved:
            raise ReferenceFormatError(
                f"feature names {reserved} start with @, which is reserved for the prediction "
                "and the confidence; rename them in the events"
            )
        if self.feature_types:
            names = sorted(self.feature_types)
        else:
            # The most frequent features, so a rare debug field cannot push out a real input.
            by_presence = sorted(
                self._features.items(), key=lambda item: (-item[1].present, item[0])
            )
            names = sorted(name for name, _ in by_presence[: self.max_features])
        features = tuple(
            self._feature(name, self._features.get(name, _Column()), self.feature_types.get(name))
            for name in names
        )
        prediction = None
        if self._prediction.present:
            prediction = self._feature(PREDICTION_ITEM, self._prediction, None)
        confidence = None
        if self._confidence:
            confidence = self._confidence_reference()
        return Reference(
            model=self.model,
            created_at_ms=created_at_ms,
            features=features,
            prediction=prediction,
            confidence=confidence,
            version=self.version,
            source=source,
            events=self.events,
        )

    def _feature(self, name: str, column: _Column, kind: FeatureKind | None) -> FeatureReference:
        missing = self.events - column.present
        if kind is None:
            kind = (
                FeatureKind.NUMERIC
                if column.numbers and not column.others
                else FeatureKind.CATEGORICAL
            )
        if kind is FeatureKind.NUMERIC:
            parsed = numeric_column(list(column.others.elements()))
            values = np.concatenate([np.asarray(column.numbers, dtype=np.float64), parsed])
            unparsed = int(np.isnan(values).sum())
            return _numeric(name, values[~np.isnan(values)], missing + unparsed, self.bins)
        counts = Counter(column.others)
        numbers, number_counts = np.unique(np.asarray(column.numbers), return_counts=True)
        for number, count in zip(numbers.tolist(), number_counts.tolist(), strict=True):
            key = category_key(number)
            assert key is not None
            counts[key] += count
        return _categorical(name, counts, missing, self.top_k)

    def _confidence_reference(self) -> FeatureReference:
        values = np.asarray(self._confidence, dtype=np.float64)
        bins = self.confidence_bins
        counts = np.zeros(bins + 3, dtype=np.int64)
        counts[MISSING_BIN] = self.events - len(values)
        counts[2 : bins + 2] = np.bincount(confidence_bin_of(values, bins), minlength=bins)
        edges = np.arange(bins + 1) / bins
        return FeatureReference.numeric(
            CONFIDENCE_ITEM,
            edges=edges.tolist(),
            counts=counts.tolist(),
            bin_values=[0.0, *((np.arange(bins) + 0.5) / bins).tolist(), 1.0],
            spread=float(values.std()),
        )


def _numeric(name: str, values: FloatArray, missing: int, bins: int) -> FeatureReference:
    if len(values) == 0:
        # Never seen with a value: any value later is a change, and lands outside [0, 0].
        return FeatureReference.numeric(
            name,
            edges=(0.0, 0.0),
            counts=(missing, 0, 0, 0),
            bin_values=(0.0, 0.0, 0.0),
            spread=0.0,
        )
    lowest, highest = float(values.min()), float(values.max())
    # "lower" picks reference values, so every bin [edge, next edge) holds at least its edge.
    quantiles = np.quantile(values, np.arange(1, bins) / bins, method="lower")
    interior = np.unique(quantiles)
    interior = interior[interior > lowest]
    edges = np.concatenate([[lowest], interior, [highest]])
    partial = FeatureReference.numeric(
        name,
        edges=edges.tolist(),
        counts=[0] * (len(edges) + 2),
        bin_values=[lowest] * (len(edges) + 1),
        spread=0.0,
    )
    bins_of_values = partial.bin_numbers(values)
    counts = np.bincount(bins_of_values, minlength=len(edges) + 2)
    counts[MISSING_BIN] += missing
    sums = np.bincount(bins_of_values, weights=values, minlength=len(edges) + 2)
    # Each quantile bin is represented by the mean of its reference values (for Wasserstein);
    # underflow and overflow hold no reference value and are represented by the extremes.
    inner = slice(2, len(edges) + 1)
    means = sums[inner] / np.maximum(counts[inner], 1)
    lower_edges, upper_edges = edges[:-1], edges[1:]
    means = np.where(counts[inner] > 0, means, (lower_edges + upper_edges) / 2)
    bin_values = np.maximum.accumulate(np.clip(means, lower_edges, upper_edges))
    return FeatureReference.numeric(
        name,
        edges=edges.tolist(),
        counts=counts.tolist(),
        bin_values=[lowest, *bin_values.tolist(), highest],
        spread=float(values.std()),
    )


def _categorical(name: str, counts: Counter[str], missing: int, top_k: int) -> FeatureReference:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[:top_k]
    other = sum(count for _, count in ranked[top_k:])
    return FeatureReference.categorical(
        name,
        categories=[category for category, _ in kept],
        counts=[missing, other, *(count for _, count in kept)],
    )


def window_counts(reference: Reference, window: SeriesWindow) -> dict[str, IntArray]:
    """Each reference item's histogram in ``window``, in the reference's bin layout.

    Only fields written with this reference's bins (its ``field_tag``) count. The confidence
    histogram is the consumer's fixed one; its missing bin is the events without a confidence.
    Bins a window holds beyond the reference's layout (impossible unless the data is damaged)
    are ignored.
    """
    tag = reference.field_tag
    result: dict[str, IntArray] = {}
    for feature in reference.features:
        result[feature.name] = _dense(window, feature_metric(tag, feature.name), feature.bin_count)
    if reference.prediction is not None:
        result[PREDICTION_ITEM] = _dense(
            window, prediction_metric(tag), reference.prediction.bin_count
        )
    if reference.confidence is not None:
        bins = reference.confidence.bin_count
        counts = np.zeros(bins, dtype=np.int64)
        consumer_bins = _dense(window, Metric.CONFIDENCE, bins - 3)
        counts[2 : bins - 1] = consumer_bins
        counts[MISSING_BIN] = max(0, window.events - window.counter(Metric.CONFIDENCE_COUNT))
        result[CONFIDENCE_ITEM] = counts
    return result


def _dense(window: SeriesWindow, metric: str, bins: int) -> IntArray:
    counts = np.zeros(bins, dtype=np.int64)
    for index, count in window.histograms.get(metric, {}).items():
        if 0 <= index < bins:
            counts[index] += count
    return counts


def freeze_window(
    reference: Reference,
    window: SeriesWindow,
    *,
    created_at_ms: int,
    version: str | None,
    source: str,
) -> Reference:
    """A new reference with ``reference``'s bins and ``window``'s counts.

    The bin values and spreads stay those of ``reference`` (a window holds counts, not values).
    Raises :class:`ReferenceFormatError` when the window holds no event binned with
    ``reference``.
    """
    counts = window_counts(reference, window)
    observed = sum(int(c.sum()) for name, c in counts.items() if name != CONFIDENCE_ITEM)
    if observed == 0:
        raise ReferenceFormatError(
            f"the window holds no events binned with reference {reference.field_tag} of "
            f"{reference.model}; nothing to freeze"
        )

    def renewed(item: FeatureReference | None) -> FeatureReference | None:
        if item is None:
            return None
        new_counts = counts[item.name].tolist()
        if item.kind is FeatureKind.NUMERIC:
            return FeatureReference.numeric(
                item.name,
                edges=item.edges,
                counts=new_counts,
                bin_values=item.bin_values,
                spread=item.spread,
            )
        return FeatureReference.categorical(
            item.name, categories=item.categories, counts=new_counts
        )

    features = tuple(renewed(feature) for feature in reference.features)
    return Reference(
        model=reference.model,
        created_at_ms=created_at_ms,
        features=tuple(feature for feature in features if feature is not None),
        prediction=renewed(reference.prediction),
        confidence=renewed(reference.confidence),
        version=version,
        source=source,
        events=window.events,
    )
