"""A model's quality reference: what its labelled past looked like, frozen from a window.

It holds what the label-free estimate and the fairness figures compare against:

* per confidence bin, the labelled predictions and the correct ones (the calibration of
  ``detectors.label_free_estimate``);
* each segment's share of the traffic (``attribute=value`` -> share), so a segment's share today
  can be compared with it (representation drift).

``driftline calibrate`` freezes one from a window of the live store ("the last hour of v41, with
its labels, is what good looks like") and saves it in Redis; the evaluator re-reads it every
``quality.reference_refresh_seconds``.

>>> from detectors.series import Series
>>> from detectors.window_summary import summarise
>>> window = summarise({"v1|stable||events": 200, "v1|stable|region=eu|events": 50,
...                     "v1|stable||labelled_confidence:1": 100,
...                     "v1|stable||correct_confidence:1": 80})
>>> reference = freeze_quality_reference("fraud", window, "v1", created_at_ms=0, bins=2)
>>> reference.labelled, reference.correct, reference.segment_shares
((0, 100), (0, 80), {'region=eu': 0.25})
>>> QualityReference.from_json(reference.to_json()) == reference
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.label_free_estimate import CalibrationError, ConfidenceCalibration
from detectors.series import Metric, Series
from detectors.window_summary import SeriesWindow

__all__ = [
    "QUALITY_REFERENCE_FORMAT",
    "QualityReference",
    "QualityReferenceError",
    "freeze_quality_reference",
]

QUALITY_REFERENCE_FORMAT = "driftline/quality-reference/v1"


class QualityReferenceError(ValueError):
    """A document or window that cannot be a quality reference; the message names the field."""


@dataclass(frozen=True)
class QualityReference:
    model: str
    created_at_ms: int
    labelled: tuple[int, ...]
    correct: tuple[int, ...]
    segment_shares: dict[str, float] = field(default_factory=dict)
    version: str | None = None
    source: str = ""

    def calibration(self, minimum_labelled: int = 100) -> ConfidenceCalibration | None:
        """The confidence calibration, or ``None`` when the reference has too few labels."""
        try:
            return ConfidenceCalibration(self.labelled, self.correct, minimum_labelled)
        except CalibrationError:
            return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": QUALITY_REFERENCE_FORMAT,
                "model": self.model,
                "version": self.version,
                "created_at_ms": self.created_at_ms,
                "source": self.source,
                "labelled": list(self.labelled),
                "correct": list(self.correct),
                "segment_shares": self.segment_shares,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> QualityReference:
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise QualityReferenceError(f"not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise QualityReferenceError("quality reference: expected an object")
        if document.get("format") != QUALITY_REFERENCE_FORMAT:
            raise QualityReferenceError(
                f"quality reference.format: expected {QUALITY_REFERENCE_FORMAT!r}, "
                f"got {document.get('format')!r}"
            )
        labelled = _integers(document, "labelled")
        correct = _integers(document, "correct")
        if len(labelled) != len(correct):
            raise QualityReferenceError(
                f"quality reference.correct: {len(correct)} bins, labelled has {len(labelled)}"
            )
        shares = document.get("segment_shares", {})
        if not isinstance(shares, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in shares.values()
        ):
            raise QualityReferenceError(
                f"quality reference.segment_shares: expected segment -> number, got {shares!r}"
            )
        model = document.get("model")
        created = document.get("created_at_ms")
        if not isinstance(model, str) or not isinstance(created, int):
            raise QualityReferenceError(
                f"quality reference: model must be a string and created_at_ms an integer, got "
                f"{model!r} and {created!r}"
            )
        version = document.get("version")
        return cls(
            model=model,
            created_at_ms=created,
            labelled=tuple(labelled),
            correct=tuple(correct),
            segment_shares={str(k): float(v) for k, v in shares.items()},
            version=version if isinstance(version, str) else None,
            source=str(document.get("source", "")),
        )


def _integers(document: Mapping[str, Any], key: str) -> list[int]:
    values = document.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise QualityReferenceError(
            f"quality reference.{key}: expected a list of non-negative integers, got {values!r}"
        )
    return values


def freeze_quality_reference(
    model: str,
    window: Mapping[Series, SeriesWindow],
    version: str | None,
    *,
    created_at_ms: int,
    bins: int,
    source: str = "",
) -> QualityReference:
    """A reference from a window's stable series of ``version`` (every stable version if None).

    Segment shares are each segment series' events over the whole-traffic events of the same
    versions.
    """
    labelled = [0] * bins
    correct = [0] * bins
    whole = 0
    segment_events: dict[str, int] = {}
    for series, series_window in window.items():
        if series.deployment != "stable" or (version is not None and series.version != version):
            continue
        if series.segment:
            segment_events[series.segment] = (
                segment_events.get(series.segment, 0) + series_window.events
            )
            continue
        whole += series_window.events
        for metric, target in (
            (Metric.LABELLED_CONFIDENCE, labelled),
            (Metric.CORRECT_CONFIDENCE, correct),
        ):
            for bin_index, count in series_window.histograms.get(metric, {}).items():
                if not 0 <= bin_index < bins:
                    raise QualityReferenceError(
                        f"confidence bin {bin_index} outside 0..{bins - 1}: was the window "
                        f"written with another monitoring.confidence_bins?"
                    )
                target[bin_index] += count
    if whole == 0:
        raise QualityReferenceError(
            f"model {model!r}: the window has no stable traffic"
            + (f" of version {version!r}" if version else "")
        )
    return QualityReference(
        model=model,
        created_at_ms=created_at_ms,
        labelled=tuple(labelled),
        correct=tuple(correct),
        segment_shares={name: count / whole for name, count in sorted(segment_events.items())},
        version=version,
        source=source,
    )
