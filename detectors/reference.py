"""References (baselines): the known-good distributions that drift is measured against.

A :class:`Reference` belongs to one model. It holds, for every watched feature and for the
model's prediction and confidence, fixed bins and the reference's counts over them. Consumers bin
live traffic with these bins (a reference *is* the :class:`~detectors.window_update.FeatureBinner`
the consumer hands to ``build_window_update``), so a window's histogram and the reference's counts
always cover the same bins, and the statistics of ``detectors.drift_statistics`` compare them
directly.

Bin layout, shared by the reference counts and the window histograms:

* numeric: ``0`` missing, ``1`` underflow (below the reference minimum), ``2 .. len(edges)`` the
  quantile bins ``[edges[i], edges[i+1])`` (the last one closed: ``[edges[-2], edges[-1]]``),
  ``len(edges) + 1`` overflow (above the reference maximum). The edges are reference values at
  equal-mass quantiles, de-duplicated, so a discrete feature gets one bin per frequent value.
* categorical: ``0`` missing, ``1`` other (any value outside the top-K), ``2 + i`` category ``i``.

Missing means the key is absent, ``null``, or (numeric) a string that is not a number. Categorical
values are compared as strings: ``3``, ``3.0`` and ``"3"`` are one category, ``true`` is
``"true"``.

A reference is immutable. Its id is the SHA-256 of its canonical JSON, and the first 12 hex digits
(:attr:`Reference.field_tag`) are part of every window field the consumer writes with it, so bins
of two different references never add up in one window: after a reference change the evaluator
reads only the new reference's fields, which fill up from zero while the old ones expire.

>>> reference = Reference(
...     model="fraud",
...     created_at_ms=1_700_000_000_000,
...     features=(
...         FeatureReference.numeric("amount", edges=(0.0, 10.0, 100.0), counts=(1, 0, 5, 5, 0),
...                                  bin_values=(0.0, 4.0, 40.0, 100.0), spread=30.0),
...         FeatureReference.categorical("country", categories=("DE", "FR"), counts=(0, 1, 6, 4)),
...     ),
... )
>>> reference.field_tag
'73a938b2792e'
>>> bins = reference.bin_features([{"amount": 5.0, "country": "FR"},
...                               {"amount": 1e6, "country": "US"},
...                               {"amount": None}])
>>> {name: column.tolist() for name, column in bins.items()}
{'amount': [2, 4, 0], 'country': [3, 1, 0]}
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.sequential_detector import SequentialFormatError, SequentialReference

__all__ = [
    "CONFIDENCE_ITEM",
    "MISSING_BIN",
    "OTHER_BIN",
    "PREDICTION_ITEM",
    "REFERENCE_FORMAT",
    "FeatureKind",
    "FeatureReference",
    "Reference",
    "ReferenceFormatError",
    "category_key",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

REFERENCE_FORMAT = "driftline/reference/v1"
MISSING_BIN = 0
UNDERFLOW_BIN = 1
OTHER_BIN = 1
FIRST_CATEGORY_BIN = 2
PREDICTION_ITEM = "@prediction"
"""The name the prediction is reported under (``feature`` label); features may not start with @."""
CONFIDENCE_ITEM = "@confidence"


class ReferenceFormatError(ValueError):
    """A reference document that cannot be used; the message names the field and the value."""


class FeatureKind(enum.StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


def category_key(value: object) -> str | None:
    """The category a raw value counts as; ``None`` for missing.

    >>> [category_key(v) for v in ("DE", 3.0, 2.5, True, None)]
    ['DE', '3', '2.5', 'true', None]
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def _numeric_value(value: object) -> float:
    """One raw value as a number, ``nan`` when it is missing (the slow path of the binner)."""
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # what numpy's fast path does with a string, too
        except ValueError:
            return math.nan
    return math.nan


def numeric_column(column: Sequence[object]) -> FloatArray:
    """Raw values as floats; missing and non-numeric values become ``nan``."""
    try:
        # None becomes nan and numeric strings are parsed, in C; other strings raise.
        values: FloatArray = np.array(column, dtype=np.float64)
    except (ValueError, TypeError):
        values = np.fromiter(map(_numeric_value, column), dtype=np.float64, count=len(column))
    return _finite_or_missing(values)


def _finite_or_missing(values: FloatArray) -> FloatArray:
    """``values`` with the infinities, which only strings like "inf" parse to (JSON has none), as
    missing: no bin edge or mean can hold one."""
    values[np.isinf(values)] = np.nan
    return values


@dataclass(frozen=True)
class FeatureReference:
    """The bins and reference counts of one feature (or the prediction, or the confidence).

    Use :meth:`numeric` or :meth:`categorical` to build one; both check the layout.
    """

    name: str
    kind: FeatureKind
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()
    bin_values: tuple[float, ...] = ()
    spread: float = 0.0
    categories: tuple[str, ...] = ()
    sequential: SequentialReference | None = None
    """The sequential test's table and factors (numeric features built from events only)."""

    @classmethod
    def numeric(
        cls,
        name: str,
        *,
        edges: Sequence[float],
        counts: Sequence[int],
        bin_values: Sequence[float],
        spread: float,
        sequential: SequentialReference | None = None,
        where: str | None = None,
    ) -> FeatureReference:
        """A numeric feature; ``bin_values`` cover underflow, the quantile bins and overflow.

        ``where`` names the feature in error messages (default: its name)."""
        made = cls(
            name=name,
            kind=FeatureKind.NUMERIC,
            counts=tuple(int(c) for c in counts),
            edges=tuple(float(e) for e in edges),
            bin_values=tuple(float(v) for v in bin_values),
            spread=float(spread),
            sequential=sequential,
        )
        made.check(where or name)
        return made

    @classmethod
    def categorical(
        cls,
        name: str,
        *,
        categories: Sequence[str],
        counts: Sequence[int],
        where: str | None = None,
    ) -> FeatureReference:
        made = cls(
            name=name,
            kind=FeatureKind.CATEGORICAL,
            counts=tuple(int(c) for c in counts),
            categories=tuple(categories),
        )
        made.check(where or name)
        return made

    @property
    def bin_count(self) -> int:
        return len(self.counts)

    @property
    def ordered(self) -> bool:
        """Numeric bins (without the missing bin) are ordered; categories are not."""
        return self.kind is FeatureKind.NUMERIC

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def check(self, where: str) -> None:
        """Raise :class:`ReferenceFormatError` unless the layout is consistent."""
        if any(count < 0 for count in self.counts):
            raise ReferenceFormatError(f"{where}.counts: counts must be >= 0, got {self.counts}")
        if sum(self.counts) >= 2**63:  # windows and statistics count in int64
            raise ReferenceFormatError(f"{where}.counts: must sum to less than 2^63")
        if self.kind is FeatureKind.NUMERIC:
            edges = self.edges
            if len(edges) < 2 or not all(math.isfinite(e) for e in edges):
                raise ReferenceFormatError(
                    f"{where}.edges: need at least 2 finite edges, got {list(edges)}"
                )
            interior = edges[1:-1]
            if (
                edges[-1] < edges[0]
                or any(b <= a for a, b in itertools.pairwise(interior))
                or (interior and (interior[0] <= edges[0] or interior[-1] > edges[-1]))
            ):
                raise ReferenceFormatError(
                    f"{where}.edges: must be min < strictly increasing interior edges <= max, "
                    f"got {list(edges)}"
                )
            if len(self.counts) != len(edges) + 2:
                raise ReferenceFormatError(
                    f"{where}.counts: expected {len(edges) + 2} bins (missing, underflow, "
                    f"{len(edges) - 1} quantile bins, overflow), got {len(self.counts)}"
                )
            values = self.bin_values
            if len(values) != len(edges) + 1 or not all(math.isfinite(v) for v in values):
                raise ReferenceFormatError(
                    f"{where}.bin_values: expected {len(edges) + 1} finite values (underflow, "
                    f"quantile bins, overflow), got {list(values)}"
                )
            if any(b < a for a, b in itertools.pairwise(values)):
                raise ReferenceFormatError(
                    f"{where}.bin_values: must be non-decreasing, got {list(values)}"
                )
            if not (math.isfinite(self.spread) and self.spread >= 0):
                raise ReferenceFormatError(
                    f"{where}.spread: must be finite and >= 0, got {self.spread!r}"
                )
            if self.sequential is not None:
                try:
                    self.sequential.check(f"{where}.sequential")
                except SequentialFormatError as error:
                    raise ReferenceFormatError(str(error)) from None
        else:
            if len(set(self.categories)) != len(self.categories):
                raise ReferenceFormatError(
                    f"{where}.categories: must be unique, got {list(self.categories)}"
                )
            if len(self.counts) != len(self.categories) + FIRST_CATEGORY_BIN:
                raise ReferenceFormatError(
                    f"{where}.counts: expected {len(self.categories) + FIRST_CATEGORY_BIN} bins "
                    f"(missing, other, {len(self.categories)} categories), got {len(self.counts)}"
                )

    # --- binning (vectorised: one numpy call per column, never a Python loop per event) ----------

    @cached_property
    def _interior_edges(self) -> FloatArray:
        return np.asarray(self.edges[1:-1], dtype=np.float64)

    @cached_property
    def _category_bins(self) -> dict[object, int]:
        lookup: dict[object, int] = {
            category: FIRST_CATEGORY_BIN + i for i, category in enumerate(self.categories)
        }
        lookup[None] = MISSING_BIN
        return lookup

    def bin_numbers(self, values: FloatArray) -> IntArray:
        """Bins of numeric values (``nan`` is missing); numeric features only."""
        bins: IntArray = np.searchsorted(self._interior_edges, values, side="right") + 2
        bins[values < self.edges[0]] = UNDERFLOW_BIN
        bins[values > self.edges[-1]] = len(self.edges) + 1
        bins[np.isnan(values)] = MISSING_BIN
        return bins

    def bin_column(self, column: Sequence[object]) -> IntArray:
        """The bin of every raw value of a column (values as decoded from events)."""
        if self.kind is FeatureKind.NUMERIC:
            return self.bin_numbers(numeric_column(column))
        lookup = self._category_bins
        # Strings and None hit the lookup directly; numbers and booleans, whose dictionary keys
        # would collide (True == 1 == 1.0), go through category_key on the slow path.
        bins = np.fromiter(
            (
                lookup.get(value, OTHER_BIN) if value is None or type(value) is str else -1
                for value in column
            ),
            dtype=np.int64,
            count=len(column),
        )
        for position in np.flatnonzero(bins < 0).tolist():
            bins[position] = lookup.get(category_key(column[position]), OTHER_BIN)
        return bins

    # --- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "kind": str(self.kind)}
        if self.kind is FeatureKind.NUMERIC:
            document["edges"] = list(self.edges)
            document["bin_values"] = list(self.bin_values)
            document["spread"] = self.spread
            if self.sequential is not None:  # absent otherwise, so older references keep their id
                document["sequential"] = self.sequential.to_dict()
        else:
            document["categories"] = list(self.categories)
        document["counts"] = list(self.counts)
        return document

    @classmethod
    def from_dict(cls, document: object, where: str) -> FeatureReference:
        fields = _mapping(document, where)
        name = _typed(fields, "name", str, where)
        kind_name = _typed(fields, "kind", str, where)
        counts = _integers(fields, "counts", where)
        if kind_name == FeatureKind.NUMERIC:
            _only(
                fields,
                {"name", "kind", "edges", "bin_values", "spread", "counts", "sequential"},
                where,
            )
            sequential = None
            if fields.get("sequential") is not None:
                try:
                    sequential = SequentialReference.from_dict(
                        fields["sequential"], f"{where}.sequential"
                    )
                except SequentialFormatError as error:
                    raise ReferenceFormatError(str(error)) from None
            return cls.numeric(
                name,
                edges=_numbers(fields, "edges", where),
                counts=counts,
                bin_values=_numbers(fields, "bin_values", where),
                spread=_number(fields, "spread", where),
                sequential=sequential,
                where=where,
            )
        if kind_name == FeatureKind.CATEGORICAL:
            _only(fields, {"name", "kind", "categories", "counts"}, where)
            categories = fields.get("categories")
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                raise ReferenceFormatError(
                    f"{where}.categories: expected a list of strings, got {categories!r}"
                )
            return cls.categorical(name, categories=categories, counts=counts, where=where)
        raise ReferenceFormatError(
            f"{where}.kind: expected 'numeric' or 'categorical', got {kind_name!r}"
        )


@dataclass(frozen=True)
class Reference:
    """One model's reference; also the :class:`~detectors.window_update.FeatureBinner` for it.

    ``version`` is the model version it was frozen from (informational: every version of the
    model is compared with it); ``source`` says where it came from; ``events`` is how many events
    it was built from.
    """

    model: str
    created_at_ms: int
    features: tuple[FeatureReference, ...]
    prediction: FeatureReference | None = None
    confidence: FeatureReference | None = None
    version: str | None = None
    source: str = ""
    events: int = 0
    reference_id: str = field(init=False)

    def __post_init__(self) -> None:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ReferenceFormatError(f"features: names must be unique, got {names}")
        for feature in self.features:
            if not feature.name or feature.name.startswith("@"):
                raise ReferenceFormatError(
                    f"features: {feature.name!r} is not a feature name (names starting with @ "
                    "are reserved for the prediction and the confidence)"
                )
        # The windows count these two under their fixed names, and the confidence in the
        # consumers' numeric bins.
        if self.prediction is not None and self.prediction.name != PREDICTION_ITEM:
            raise ReferenceFormatError(
                f"prediction.name: must be {PREDICTION_ITEM!r}, got {self.prediction.name!r}"
            )
        confidence = self.confidence
        if confidence is not None and (
            confidence.name != CONFIDENCE_ITEM or confidence.kind is not FeatureKind.NUMERIC
        ):
            raise ReferenceFormatError(
                f"confidence: must be numeric and named {CONFIDENCE_ITEM!r}, got "
                f"{confidence.kind.value} {confidence.name!r}"
            )
        for name in ("created_at_ms", "events"):
            if not 0 <= getattr(self, name) < 2**63:
                raise ReferenceFormatError(
                    f"{name}: must be 0 to 2^63 - 1, got {getattr(self, name)!r}"
                )
        digest = hashlib.sha256(_canonical(self._content()).encode("utf-8")).hexdigest()
        object.__setattr__(self, "reference_id", digest)

    @property
    def field_tag(self) -> str:
        """Short id written into window field names (see the module docstring)."""
        return self.reference_id[:12]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def items(self) -> tuple[FeatureReference, ...]:
        """Features, then the prediction and the confidence when the reference has them."""
        outputs = tuple(item for item in (self.prediction, self.confidence) if item is not None)
        return (*self.features, *outputs)

    # --- FeatureBinner ---------------------------------------------------------------------------

    def bin_features(
        self,
        features: Sequence[Mapping[str, object]],
        numeric_values: FloatArray | None = None,
    ) -> dict[str, IntArray]:
        """Bin of every event for each reference feature (absent keys are missing);
        ``numeric_values``: the events' :meth:`numeric_values`, when the caller has them."""
        bins: dict[str, IntArray] = {}
        numeric = self._numeric_features
        if numeric_values is None and len(numeric) > 1:
            numeric_values = self.numeric_values(features)
        if numeric_values is not None:
            for feature, column in zip(numeric, numeric_values.T, strict=True):
                bins[feature.name] = feature.bin_numbers(np.ascontiguousarray(column))
        for feature in self.features:
            if feature.name not in bins:
                bins[feature.name] = feature.bin_column([row.get(feature.name) for row in features])
        return {feature.name: bins[feature.name] for feature in self.features}

    @cached_property
    def sequential_features(self) -> tuple[FeatureReference, ...]:
        """The features with a sequential test (``detectors.sequential_detector``)."""
        return tuple(f for f in self.features if f.sequential is not None)

    @cached_property
    def sequential_columns(self) -> IntArray:
        """Where the :attr:`sequential_features` are among the columns of :meth:`numeric_values`
        (only numeric features have a sequential test)."""
        numeric = [feature.name for feature in self._numeric_features]
        return np.array([numeric.index(f.name) for f in self.sequential_features], dtype=np.int64)

    def numeric_values(self, rows: Sequence[Mapping[str, object]]) -> FloatArray:
        """The values of the numeric features in each row (``nan`` for missing), one column each
        in the reference's order: built once a batch, for the binning and the sequential test."""
        return _numeric_matrix(self._numeric_features, rows)

    @cached_property
    def _numeric_features(self) -> tuple[FeatureReference, ...]:
        return tuple(f for f in self.features if f.kind is FeatureKind.NUMERIC)

    def bin_predictions(self, predictions: Sequence[object]) -> IntArray | None:
        if self.prediction is None:
            return None
        return self.prediction.bin_column(predictions)

    # --- serialisation -----------------------------------------------------------------------

    def _content(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "model": self.model,
            "version": self.version,
            "created_at_ms": self.created_at_ms,
            "source": self.source,
            "events": self.events,
            "features": [feature.to_dict() for feature in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._content(), "reference_id": self.reference_id}

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, one line): the same reference gives the same bytes."""
        return _canonical(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        """Parse and check a reference document; errors name the field and the bad value."""
        try:
            document = json.loads(text)
        # Decode errors are ValueErrors, as is an integer of more than 4,300 digits.
        except (ValueError, RecursionError) as error:
            raise ReferenceFormatError(f"not valid JSON: {error}") from None
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: object) -> Reference:
        fields = _mapping(document, "reference")
        found_format = fields.get("format")
        if found_format != REFERENCE_FORMAT:
            raise ReferenceFormatError(
                f"reference.format: expected {REFERENCE_FORMAT!r}, got {found_format!r}"
            )
        _only(
            fields,
            {
                "format",
                "model",
                "version",
                "created_at_ms",
                "source",
                "events",
                "features",
                "prediction",
                "confidence",
                "reference_id",
            },
            "reference",
        )
        version = fields.get("version")
        if version is not None and not isinstance(version, str):
            raise ReferenceFormatError(f"reference.version: expected a string, got {version!r}")
        features = fields.get("features")
        if not isinstance(features, list):
            raise ReferenceFormatError(f"reference.features: expected a list, got {features!r}")

        def output(name: str) -> FeatureReference | None:
            value = fields.get(name)
            return None if value is None else FeatureReference.from_dict(value, f"reference.{name}")

        reference = cls(
            model=_typed(fields, "model", str, "reference"),
            created_at_ms=_typed(fields, "created_at_ms", int, "reference"),
            features=tuple(
                FeatureReference.from_dict(item, f"reference.features[{index}]")
                for index, item in enumerate(features)
            ),
            prediction=output("prediction"),
            confidence=output("confidence"),
            version=version,
            source=str(fields.get("source", "")),
            events=_typed(fields, "events", int, "reference") if "events" in fields else 0,
        )
        claimed = fields.get("reference_id")
        if claimed is not None and claimed != reference.reference_id:
            raise ReferenceFormatError(
                f"reference.reference_id: {claimed!r} does not match the content "
                f"({reference.reference_id}); the file was edited or damaged"
            )
        return reference


def _numeric_matrix(
    numeric: Sequence[FeatureReference], features: Sequence[Mapping[str, object]]
) -> FloatArray:
    """The numeric features' values, one row per event (``nan`` for missing).

    The hot path of a consumer that watches features: one C-level ``itemgetter`` per event and
    one ``np.array`` per batch, instead of a dictionary lookup per event and feature.
    """
    names = [feature.name for feature in numeric]
    if len(names) < 2:  # an itemgetter of one name gives values, not rows; of none, fails
        columns = [numeric_column([row.get(name) for row in features]) for name in names]
        return np.stack(columns, axis=1) if columns else np.empty((len(features), 0))
    getter = operator.itemgetter(*names)
    try:
        rows = [getter(row) for row in features]
    except KeyError:  # some event lacks a feature: it is missing there
        rows = [tuple(row.get(name) for name in names) for row in features]
    try:
        matrix: FloatArray = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    except (ValueError, TypeError):  # a non-numeric string somewhere: column by column
        matrix = np.stack(
            [numeric_column([row[j] for row in rows]) for j in range(len(names))], axis=1
        ).reshape(len(rows), len(names))
    return _finite_or_missing(matrix)


def _canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _mapping(document: object, where: str) -> Mapping[str, Any]:
    if not isinstance(document, Mapping):
        raise ReferenceFormatError(f"{where}: expected an object, got {type(document).__name__}")
    return document


def _only(fields: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ReferenceFormatError(f"{where}: unknown key(s) {unknown}")


def _typed(fields: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = fields.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ReferenceFormatError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _number(fields: Mapping[str, Any], key: str, where: str) -> float:
    value = fields.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ReferenceFormatError(f"{where}.{key}: expected a number, got {value!r}")
    return _float(value, f"{where}.{key}")


def _numbers(fields: Mapping[str, Any], key: str, where: str) -> list[float]:
    values = fields.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise ReferenceFormatError(f"{where}.{key}: expected a list of numbers, got {values!r}")
    return [_float(v, f"{where}.{key}") for v in values]


def _float(value: int | float, where: str) -> float:
    """``value`` as a float; JSON integers have no bound, floats do."""
    try:
        return float(value)
    except OverflowError:
        raise ReferenceFormatError(f"{where}: {value} is out of a float's range") from None


def _integers(fields: Mapping[str, Any], key: str, where: str) -> list[int]:
    values = fields.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ReferenceFormatError(f"{where}.{key}: expected a list of integers, got {values!r}")
    return list(values)
