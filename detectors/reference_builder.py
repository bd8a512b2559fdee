"""Build a :class:`~detectors.reference.Reference` from events, or freeze one from a live window.

:class:`ReferenceBuilder` takes decoded events a batch at a time (``add``) and, once, builds the
reference (``build``): numeric features get equal-mass quantile edges (``bins`` of them, fewer when
values repeat), categorical ones their ``top_k`` most frequent categories; the prediction and the
confidence get references of their own. The reference's counts are its own events binned with
those bins, by the same code the consumer bins live traffic with.

Memory is bounded: each column keeps at most ``sample_size`` numbers (8 bytes each). Beyond that
it keeps a uniform sample (:attr:`ReferenceBuilder.sampled`); the edges come from the sample,
the extremes stay exact, and :class:`ReferenceCounter` counts every event into those bins in a
second pass over the same events.

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

import math
import zlib
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
from detectors.sequential_detector import FIT_NUMBERS, SequentialReference
from detectors.series import Metric
from detectors.window_summary import SeriesWindow
from detectors.window_update import feature_metric, prediction_metric
from driftline.events import FeatureValues, InferenceEvent, InvalidEvent, decode_features

__all__ = [
    "SAMPLE_SIZE",
    "ReferenceBuilder",
    "ReferenceCounter",
    "confidence_bin_of",
    "freeze_window",
    "window_counts",
]

SAMPLE_SIZE = 1_000_000
"""Numbers kept per column by default: 8 MB each. Quantile edges from a uniform sample of a
million are within about 0.001 of their exact rank (the standard error at the median is 0.0005)."""


def confidence_bin_of(confidence: FloatArray, confidence_bins: int) -> IntArray:
    """The consumer's confidence bin (``detectors.window_update``): ``floor(c * bins)``, capped."""
    bins: IntArray = np.minimum(
        (np.nan_to_num(confidence) * confidence_bins).astype(np.int64), confidence_bins - 1
    )
    return bins


class _Sample:
    """Every number of a column up to ``size`` of them, then a uniform sample of ``size``.

    Reservoir sampling (Vitter's algorithm R), a batch at a time: the ``i``-th number (from 0)
    takes a random slot with probability ``size / (i + 1)``. The generator is seeded by the
    column's name and draws once per number, so the sample does not depend on how the numbers
    were cut into batches (or files). The extremes are kept exactly.
    """

    def __init__(self, name: str, size: int) -> None:
        # 8 bytes a number (a list of floats takes 32): references are built from big files.
        self.numbers = array("d")
        self.size = size
        self.seen = 0
        self.lowest = math.inf
        self.highest = -math.inf
        self._random = np.random.default_rng(zlib.crc32(name.encode()))

    @property
    def sampled(self) -> bool:
        return self.seen > self.size

    def add(self, batch: list[float]) -> None:
        if not batch:
            return
        self.lowest, self.highest = min(self.lowest, min(batch)), max(self.highest, max(batch))
        fits = max(0, min(len(batch), self.size - len(self.numbers)))
        self.numbers.extend(batch[:fits])
        self.seen += fits
        rest = np.asarray(batch[fits:], dtype=np.float64)
        if len(rest) == 0:
            return
        positions = self.seen + np.arange(len(rest))
        slots = (self._random.random(len(rest)) * (positions + 1)).astype(np.int64)
        taken = slots < self.size
        slots, rest = slots[taken], rest[taken]
        # A slot taken twice in the batch keeps the later number, as one at a time would.
        last_first, first_index = np.unique(slots[::-1], return_index=True)
        np.frombuffer(self.numbers, dtype=np.float64)[last_first] = rest[::-1][first_index]
        self.seen += len(positions)

    def values(self) -> FloatArray:
        return np.asarray(self.numbers, dtype=np.float64)


class _Column:
    """Everything seen of one feature: numbers (a sample of them, beyond ``sample_size``), other
    values by category, and how often."""

    def __init__(self, name: str, sample_size: int) -> None:
        self.numbers = _Sample(name, sample_size)
        self.others: Counter[str] = Counter()
        self.present = 0
        # The first numbers in arrival order (a sample loses the order): the sequential test's
        # thresholds are fitted on them, autocorrelation included.
        self.first_numbers = array("d")

    def add(self, values: Iterable[object]) -> None:
        numbers = []
        for value in values:
            if value is None:
                continue
            self.present += 1
            if type(value) is float or type(value) is int:
                numbers.append(float(value))
            else:
                key = category_key(value)
                if key is not None:
                    self.others[key] += 1
        self.numbers.add(numbers)
        room = FIT_NUMBERS - len(self.first_numbers)
        if room > 0:
            self.first_numbers.extend(numbers[:room])


def _events_of(
    model: str, version: str | None, events: Iterable[InferenceEvent]
) -> tuple[list[InferenceEvent], list[FeatureValues], int]:
    """The events of ``model`` (and ``version``) whose features parse, those features, and how
    many were refused: the consumer refuses them too, so a reference must not count them."""
    taken, features, refused = [], [], 0
    for event in events:
        if event.model != model or (version is not None and event.version != version):
            continue
        parsed = decode_features(event.features)
        if isinstance(parsed, InvalidEvent):
            refused += 1
            continue
        taken.append(event)
        features.append(parsed)
    return taken, features, refused


class ReferenceBuilder:
    """Accumulates one model's events and builds its reference once.

    Hyperparameters are public attributes, checked here: ``bins`` (quantile bins per numeric
    feature, >= 2), ``top_k`` (categories kept, >= 1), ``max_features`` (the most frequent features
    are kept), ``confidence_bins`` (must equal ``monitoring.confidence_bins`` of the consumers),
    ``sample_size`` (numbers kept per column, >= 2: beyond it, a uniform sample; see
    :attr:`sampled`), ``sequential`` (whether numeric features get the table and thresholds of
    the sequential test, ``detectors.sequential_detector``).
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
        sample_size: int = SAMPLE_SIZE,
        sequential: bool = True,
    ) -> None:
        for name, value, lowest in (
            ("bins", bins, 2),
            ("top_k", top_k, 1),
            ("max_features", max_features, 1),
            ("confidence_bins", confidence_bins, 2),
            ("sample_size", sample_size, 2),
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
        self.sample_size = sample_size
        self.sequential = sequential
        self.events = 0
        self.refused = 0
        self._features: dict[str, _Column] = {}
        self._prediction = _Column(PREDICTION_ITEM, sample_size)
        self._confidence = _Sample(CONFIDENCE_ITEM, sample_size)

    @property
    def sampled(self) -> bool:
        """Whether a column had more than ``sample_size`` numbers. The bin edges, bin values and
        spreads of :meth:`build` then come from a uniform sample, and its counts are the sample's:
        :class:`ReferenceCounter` counts every event into those bins in a second pass."""
        columns = [*self._features.values(), self._prediction]
        return self._confidence.sampled or any(column.numbers.sampled for column in columns)

    def _column(self, name: str) -> _Column:
        column = self._features.get(name)
        if column is None:
            column = self._features[name] = _Column(name, self.sample_size)
        return column

    def add(self, events: Iterable[InferenceEvent]) -> int:
        """Take the events of this model (and version, if one was given); return how many.

        Events whose ``features`` cannot be parsed are refused (counted in ``refused``), as the
        consumer refuses them.
        """
        taken, features, refused = _events_of(self.model, self.version, events)
        self.refused += refused
        if not taken:
            return 0
        self.events += len(taken)
        columns: dict[str, list[object]] = defaultdict(list)
        for values in features:
            for name, value in values.items():
                columns[name].append(value)
        for name, column in columns.items():
            self._column(name).add(column)
        self._prediction.add(event.prediction for event in taken)
        self._confidence.add([e.confidence for e in taken if e.confidence is not None])
        return len(taken)

    def build(self, *, created_at_ms: int, source: str = "") -> Reference:
        """The reference of everything added so far (of a sample of it: see :attr:`sampled`)."""
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
            self._feature(name, self._column(name), self.feature_types.get(name)) for name in names
        )
        prediction = None
        if self._prediction.present:
            prediction = self._feature(PREDICTION_ITEM, self._prediction, None)
        confidence = None
        if self._confidence.seen:
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
                if column.numbers.seen and not column.others
                else FeatureKind.CATEGORICAL
            )
        if kind is FeatureKind.NUMERIC:
            parsed = numeric_column(list(column.others.elements()))
            values = np.concatenate([column.numbers.values(), parsed])
            unparsed = int(np.isnan(values).sum())
            values = values[~np.isnan(values)]
            # The extremes are exact even when the numbers are a sample.
            extremes = (
                (
                    min(float(values.min()), column.numbers.lowest),
                    max(float(values.max()), column.numbers.highest),
                )
                if len(values)
                else None
            )
            sequential = (
                SequentialReference.fit(values, np.asarray(column.first_numbers))
                if self.sequential
                else None
            )
            return _numeric(name, values, missing + unparsed, self.bins, extremes, sequential)
        counts = Counter(column.others)
        numbers, number_counts = np.unique(column.numbers.values(), return_counts=True)
        for number, count in zip(numbers.tolist(), number_counts.tolist(), strict=True):
            key = category_key(number)
            assert key is not None
            counts[key] += count
        return _categorical(name, counts, missing, self.top_k)

    def _confidence_reference(self) -> FeatureReference:
        values = self._confidence.values()
        bins = self.confidence_bins
        counts = np.zeros(bins + 3, dtype=np.int64)
        counts[MISSING_BIN] = self.events - self._confidence.seen
        counts[2 : bins + 2] = np.bincount(confidence_bin_of(values, bins), minlength=bins)
        edges = np.arange(bins + 1) / bins
        return FeatureReference.numeric(
            CONFIDENCE_ITEM,
            edges=edges.tolist(),
            counts=counts.tolist(),
            bin_values=[0.0, *((np.arange(bins) + 0.5) / bins).tolist(), 1.0],
            spread=float(values.std()),
        )


class ReferenceCounter:
    """The second pass of a sampled build (:attr:`ReferenceBuilder.sampled`): counts every event
    into the bins of the reference built from the sample, with the code the consumer bins live
    traffic with. Give it the same events, in any order or batches.
    """

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.events = 0
        self._counts = {
            item.name: np.zeros(item.bin_count, dtype=np.int64) for item in reference.items
        }

    def add(self, events: Iterable[InferenceEvent]) -> int:
        """Count the events of the reference's model (and version); return how many."""
        reference = self.reference
        taken, features, _ = _events_of(reference.model, reference.version, events)
        if not taken:
            return 0
        self.events += len(taken)
        for feature in reference.features:
            column = [values.get(feature.name) for values in features]
            self._count(feature, feature.bin_column(column))
        if reference.prediction is not None:
            predictions = [event.prediction for event in taken]
            self._count(reference.prediction, reference.prediction.bin_column(predictions))
        if reference.confidence is not None:
            confidence = np.asarray(
                [e.confidence for e in taken if e.confidence is not None], dtype=np.float64
            )
            bins = confidence_bin_of(confidence, reference.confidence.bin_count - 3) + 2
            self._count(reference.confidence, bins)
            self._counts[CONFIDENCE_ITEM][MISSING_BIN] += len(taken) - len(confidence)
        return len(taken)

    def _count(self, item: FeatureReference, bins: IntArray) -> None:
        self._counts[item.name] += np.bincount(bins, minlength=item.bin_count)[: item.bin_count]

    def build(self) -> Reference:
        """The reference with every event counted (same bins, bin values and spreads)."""
        reference = self.reference
        return _with_counts(
            reference,
            self._counts,
            created_at_ms=reference.created_at_ms,
            version=reference.version,
            source=reference.source,
            events=self.events,
        )


def _with_counts(
    reference: Reference,
    counts: Mapping[str, IntArray],
    *,
    created_at_ms: int,
    version: str | None,
    source: str,
    events: int,
    keep_sequential: bool = True,
) -> Reference:
    """``reference`` with new counts per item (bins, bin values and spreads unchanged; the
    sequential tables too, unless ``keep_sequential`` is false)."""

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
                sequential=item.sequential if keep_sequential else None,
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
        events=events,
    )


def _numeric(
    name: str,
    values: FloatArray,
    missing: int,
    bins: int,
    extremes: tuple[float, float] | None,
    sequential: SequentialReference | None = None,
) -> FeatureReference:
    if extremes is None:  # no value at all
        # Never seen with a value: any value later is a change, and lands outside [0, 0].
        return FeatureReference.numeric(
            name,
            edges=(0.0, 0.0),
            counts=(missing, 0, 0, 0),
            bin_values=(0.0, 0.0, 0.0),
            spread=0.0,
        )
    lowest, highest = extremes
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
        spread=_spread(values),
        sequential=sequential,
    )


def _spread(values: FloatArray) -> float:
    """The standard deviation of ``values`` (at least one); where their squares overflow (values
    past 1e154), taken on them scaled to at most 1."""
    with np.errstate(over="ignore"):
        spread = float(values.std())
    if math.isfinite(spread):
        return spread
    scale = float(np.abs(values).max())
    return float((values / scale).std() * scale)


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
    The sequential tables are dropped: they describe ``reference``'s values, which the window's
    counts no longer are, and a window holds no values to fit new ones on.
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

    return _with_counts(
        reference,
        counts,
        created_at_ms=created_at_ms,
        version=version,
        source=source,
        events=window.events,
        keep_sequential=False,
    )
