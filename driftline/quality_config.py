"""Label and quality settings: ``models.<model>.labels`` and the top-level ``quality:`` section.

A model is judged against ground truth only when it has a ``labels`` section; without one its
labels are counted as ``unknown_model`` and its predictions are not recorded for the join.

Class names are compared as category strings (``detectors.reference.category_key``): a label
``1``, ``1.0`` or ``"1"`` is the class ``"1"``, ``true`` is ``"true"``.

Defaults, and why:

* ``horizon_seconds`` one day: most delayed labels (chargebacks aside) arrive within hours; every
  prediction of a joined model is kept that long (plus the grace) in Redis, about 200 bytes each
  (``docs/quality.md``), so the horizon is the memory knob.
* ``record_grace_seconds`` one hour: a prediction stays on record this long past the horizon, so a
  label that comes just too late is counted as ``beyond_horizon``, not ``unknown_event_id``.
* ``quality.minimum_labelled`` 30: the Wilson interval of a proportion over 30 labels is about
  +-0.15 wide at 0.8; fewer labels make a precision figure noise, so the window reports nodata.
* ``quality.minimum_segment_events`` 100: the same for a segment's positive-prediction rate and
  traffic share.
"""

from __future__ import annotations

import enum
from typing import Literal, Self

from pydantic import Field, model_validator

from driftline.strict_config import TEN_YEARS_SECONDS, StrictConfig

__all__ = [
    "LabelKind",
    "ModelLabelsConfig",
    "QualityConfig",
    "QualityFigure",
    "QualityThreshold",
]


class LabelKind(enum.StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class ModelLabelsConfig(StrictConfig):
    """``models.<model>.labels``: how this model's labels are joined and judged."""

    kind: LabelKind = LabelKind.CLASSIFICATION
    positive_classes: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Classes that get precision, recall and F1 (one-vs-rest); accuracy always.",
    )
    join: bool = Field(
        True,
        description="Record each prediction by event_id so labels that carry only event_id join "
        "it; false when labels always carry model, version and prediction.",
    )
    horizon_seconds: int = Field(
        86_400,
        ge=1,
        le=TEN_YEARS_SECONDS,
        description="Labels later than this after their prediction are not counted.",
    )
    record_grace_seconds: int = Field(
        3_600,
        ge=0,
        le=TEN_YEARS_SECONDS,
        description="Predictions stay on record this long past the horizon.",
    )
    error_resolution: float = Field(
        0.001,
        gt=0,
        description="Regression: absolute errors are summed in integer units of this (squared "
        "errors in units of its square), exactly, in the windows; a label whose error exceeds "
        "2^24 units is refused as error_out_of_range.",
    )

    @model_validator(mode="after")
    def _check_classes(self) -> Self:
        if len(set(self.positive_classes)) != len(self.positive_classes):
            raise ValueError(f"positive_classes must be unique, got {self.positive_classes}")
        if self.kind is LabelKind.REGRESSION and self.positive_classes:
            raise ValueError("positive_classes is for classification models, not regression")
        return self

    @property
    def record_ms(self) -> int:
        """How long past its event time a prediction stays on record (0: not recorded)."""
        return (self.horizon_seconds + self.record_grace_seconds) * 1000 if self.join else 0


QualityFigure = Literal[
    "accuracy",
    "precision",
    "recall",
    "f1",
    "label_coverage",
    "estimated_accuracy",
    "estimated_precision",
    "mean_absolute_error",
    "root_mean_squared_error",
]
_CLASS_FIGURES = {"precision", "recall", "f1", "estimated_precision"}


class QualityThreshold(StrictConfig):
    """A line ``backtest --labels`` reports crossings of (``{"kind": "quality", ...}``)."""

    figure: QualityFigure
    model: str | None = Field(None, description="Only this model; every labelled model if unset.")
    positive_class: str | None = None
    window: Literal["short", "long"] = "long"
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.below is None) == (self.above is None):
            raise ValueError("set exactly one of below and above")
        if (self.figure in _CLASS_FIGURES) != (self.positive_class is not None):
            raise ValueError(
                f"figure {self.figure!r} "
                + ("needs a positive_class" if self.figure in _CLASS_FIGURES else "has no class")
            )
        return self

    def crossed(self, value: float) -> bool:
        """True when ``value`` is on the bad side of the line."""
        if self.below is not None:
            return value < self.below
        assert self.above is not None
        return value > self.above


class QualityConfig(StrictConfig):
    """The top-level ``quality:`` section."""

    minimum_labelled: int = Field(
        30, ge=1, description="Labelled predictions a window needs before its quality counts."
    )
    minimum_segment_events: int = Field(
        100, ge=1, description="Events a segment needs before its rates and share count."
    )
    comparison_minimum_events: int = Field(
        100, ge=1, description="Events each side of a canary/shadow comparison needs."
    )
    reference_refresh_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often evaluators re-read quality references."
    )
    thresholds: list[QualityThreshold] = Field(default_factory=list)
