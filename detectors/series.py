"""Series: the slice of one model's traffic a window describes, and the hash fields that hold it.

A series is ``(version, deployment, segment)``; ``segment`` is ``""`` for all of that version's
traffic or ``"attribute=value"`` for one slice (each configured segment attribute is sliced on its
own, never crossed with the others, so cardinality stays additive). A window bucket is one Redis
hash per model whose fields are ``"<version>|<deployment>|<segment>|<metric>"``; this module is
the only place that knows that layout.

>>> field_name(Series("v2", "canary", "region=eu"), "latency:412")
'v2|canary|region=eu|latency:412'
>>> split_field('v2|canary|region=eu|latency:412')
(Series(version='v2', deployment='canary', segment='region=eu'), 'latency:412')
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "OVERFLOW_VALUE",
    "Metric",
    "Series",
    "class_metric",
    "field_name",
    "segment_name",
    "split_field",
]

OVERFLOW_VALUE = "__overflow__"
"""The segment value (and version) that traffic beyond a cardinality cap is counted under."""


class Series(NamedTuple):
    version: str
    deployment: str
    segment: str = ""

    @property
    def key(self) -> str:
        return f"{self.version}|{self.deployment}|{self.segment}"


class Metric:
    """Metric names inside a series' hash fields. Bins append ``:<bin index>``."""

    EVENTS = "events"
    ERRORS = "errors"
    LATENCY_COUNT = "latency_count"
    LATENCY = "latency"
    CONFIDENCE_COUNT = "confidence_count"
    CONFIDENCE_SUM_MICROS = "confidence_sum_micros"
    LOW_CONFIDENCE = "low_confidence"
    CONFIDENCE = "confidence"
    FEATURE = "feature"
    PREDICTION = "prediction"
    LATE_EVENTS = "late_events"
    # Predictions of label-configured models (``models.<m>.labels``), counted by the events
    # consumer; per class metrics are ``<metric>@<class>`` (:func:`class_metric`).
    PREDICTED = "predicted"
    PREDICTED_CONFIDENCE = "predicted_confidence"
    # Labels, counted by the labels consumer in the bucket of the *prediction's* time.
    LABELLED = "labelled"
    CORRECT = "correct"
    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"
    FALSE_NEGATIVE = "false_negative"
    LABEL_DELAY = "label_delay"
    LABELLED_CONFIDENCE = "labelled_confidence"
    CORRECT_CONFIDENCE = "correct_confidence"
    ABSOLUTE_ERROR_SUM = "absolute_error_sum"
    SQUARED_ERROR_SUM = "squared_error_sum"
    # Lifetime totals of the labels consumer.
    LABELS = "labels"
    LATE_LABELS = "late_labels"
    LABELS_REFUSED = "labels_refused"


def segment_name(attribute: str, value: str) -> str:
    """``attribute=value`` with ``|`` and ``%`` escaped, so the field layout stays parseable."""
    escaped = value.replace("%", "%25").replace("|", "%7C")
    return f"{attribute}={escaped}"


def class_metric(metric: str, label_class: str) -> str:
    """``<metric>@<class>``, with ``%`` and ``:`` escaped so a class never reads as a bin index.

    >>> class_metric("true_positive", "1"), class_metric("predicted_confidence", "a:b") + ":7"
    ('true_positive@1', 'predicted_confidence@a%3Ab:7')
    """
    escaped = label_class.replace("%", "%25").replace(":", "%3A")
    return f"{metric}@{escaped}"


def field_name(series: Series, metric: str) -> str:
    return f"{series.key}|{metric}"


def split_field(field: str) -> tuple[Series, str]:
    version, deployment, segment, metric = field.split("|", 3)
    return Series(version, deployment, segment), metric
