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


def segment_name(attribute: str, value: str) -> str:
    """``attribute=value`` with ``|`` and ``%`` escaped, so the field layout stays parseable."""
    escaped = value.replace("%", "%25").replace("|", "%7C")
    return f"{attribute}={escaped}"


def field_name(series: Series, metric: str) -> str:
    return f"{series.key}|{metric}"


def split_field(field: str) -> tuple[Series, str]:
    version, deployment, segment, metric = field.split("|", 3)
    return Series(version, deployment, segment), metric
