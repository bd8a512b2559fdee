"""What one rule sees in one snapshot: per alert, its value in each window and whether it breaches.

This is the built-in engine's reading of a rule, kept equal to the PromQL that
``alerting.rule_export`` writes for the same rule:

* the rule's series are the samples of ``metric`` whose labels equal ``match``, in each of the
  rule's windows; one alert per distinct label set without ``window`` (a metric without a window
  label, like the drift share, is the same value in every window);
* a relative rule pairs each series with the one reference series that has the same labels except
  ``ignoring`` and the labels ``reference`` sets (PromQL ``ignoring(...) group_left``); none, or
  more than one, is no data, as the PromQL gives no result then;
* minimum samples: the series' ``driftline_window_events`` (or the rule's ``samples_metric``,
  e.g. ``driftline_window_labels`` for quality) and the reference's must reach ``min_samples``
  in that window, else the alert has no data (PromQL ``and on(...) events >= N``);
* with ``windows: both`` the rule breaches only if it breaches in both windows.

A status of ``nodata`` is its own outcome, distinct from ``ok``: the engine never lets it count
towards ``for``, and never rolls back on it.

>>> from alerting import metric_names as names
>>> from alerting.snapshot import Snapshot
>>> from driftline.alerting_config import RuleConfig
>>> snapshot = Snapshot()
>>> for version, deployment, p99, events in (("v1", "stable", 0.1, 500), ("v2", "canary", 0.3, 40)):
...     series = ("shop", version, deployment, "", "short")
...     snapshot.add(names.LATENCY, (*series, "0.99"), p99)
...     snapshot.add(names.WINDOW_EVENTS, series, events)
>>> rule = RuleConfig(name="canary-p99", metric="driftline_latency_seconds", comparison=">",
...     threshold=1.5, match={"quantile": "0.99", "deployment": "canary"},
...     relative={"reference": {"deployment": "stable"}}, min_samples=30)
>>> [(o.status, round(o.value, 3)) for o in observe(rule, SnapshotIndex(snapshot))]
[('breach', 3.0)]
>>> rule = rule.model_copy(update={"min_samples": 50})
>>> [(o.status, o.reason) for o in observe(rule, SnapshotIndex(snapshot))]
[('nodata', 'short window: 40 events < min_samples 50')]
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from alerting import metric_names as names
from alerting.snapshot import Snapshot
from driftline.alerting_config import RuleConfig

__all__ = [
    "COMPARISONS",
    "RELATIVE_MODES",
    "Labels",
    "Observation",
    "SnapshotIndex",
    "instance_key",
    "observe",
]

Labels = Mapping[str, str]
Status = Literal["breach", "ok", "nodata"]

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _ratio(value: float, reference: float) -> float:
    if reference == 0:  # IEEE division, as PromQL does it
        return math.nan if value == 0 or math.isnan(value) else math.copysign(math.inf, value)
    return value / reference


RELATIVE_MODES: dict[str, Callable[[float, float], float]] = {
    "ratio": _ratio,
    "difference": lambda value, reference: value - reference,
    "drop": lambda value, reference: reference - value,
}
"""How a series is set against its reference. A new mode needs an entry here and its PromQL
twin in ``alerting.rule_export.RELATIVE_PROMQL``."""


@dataclass(frozen=True)
class Observation:
    """One alert's reading at one tick."""

    labels: Labels  # the alert's identity: the series labels without ``window``
    status: Status
    value: float  # compared with the threshold, in the first of the rule's windows
    values: Mapping[str, float] = field(default_factory=dict)  # per window
    reason: str = ""


def instance_key(labels: Labels) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, value) for name, value in labels.items() if value != ""))


class SnapshotIndex:
    """A snapshot's samples by metric name, and sample counts by series, built once per tick."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.taken_at_ms = snapshot.taken_at_ms
        self.by_metric: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        self._counts: dict[str, dict[tuple[str, ...], float]] = {}
        for sample in snapshot.samples:
            labels = dict(zip(sample.metric.labels, sample.labels, strict=True))
            self.by_metric[sample.metric.name].append((labels, sample.value))

    def select(self, metric: str, matchers: Labels) -> list[tuple[dict[str, str], float]]:
        return [
            (labels, value)
            for labels, value in self.by_metric.get(metric, ())
            if all(labels.get(name, "") == wanted for name, wanted in matchers.items())
        ]

    def window_count(self, metric: str, labels: Labels) -> float | None:
        """The series' value of a per-window count (``driftline_window_events`` by default)."""
        counts = self._counts.get(metric)
        if counts is None:
            counts = self._counts[metric] = {
                tuple(found.get(name, "") for name in names.WINDOW_LABELS): value
                for found, value in self.by_metric.get(metric, ())
            }
        return counts.get(tuple(labels.get(name, "") for name in names.WINDOW_LABELS))


def _samples_guard(
    index: SnapshotIndex, rule: RuleConfig, labels: Labels, minimum: int, what: str
) -> str:
    """Empty when the series has enough samples in its window, else why not."""
    if minimum <= 0:
        return ""
    count = index.window_count(rule.samples_metric, labels)
    noun = "events" if rule.samples_metric == names.WINDOW_EVENTS.name else rule.samples_metric
    if count is None:
        return f"{what}{labels.get('window')} window: no {noun}"
    if count < minimum:
        return f"{what}{labels.get('window')} window: {count:.0f} {noun} < min_samples {minimum}"
    return ""


def _reading(
    rule: RuleConfig, index: SnapshotIndex, labels: Labels, value: float
) -> tuple[float, str]:
    """The compared value of one series in one window, or NaN and why there is none."""
    window = labels.get("window", "")
    if math.isnan(value):
        return math.nan, f"{window} window: no value"
    short_of = _samples_guard(index, rule, labels, rule.min_samples, "")
    if short_of:
        return math.nan, short_of
    relative = rule.relative
    if relative is None:
        return value, ""
    free = {*relative.ignoring, *relative.reference, "window"}
    wanted = {name: v for name, v in rule.match.items() if name not in relative.ignoring}
    wanted.update(relative.reference)
    candidates = [
        ({**reference_labels, "window": window}, reference_value)
        for reference_labels, reference_value in index.select(
            relative.metric or rule.metric, wanted
        )
        if reference_labels.get("window", window) == window
        and all(
            reference_labels.get(name, "") == labels.get(name, "")
            for name in {*reference_labels, *labels} - free
        )
    ]
    if len(candidates) != 1:
        found = "no reference series" if not candidates else f"{len(candidates)} reference series"
        return math.nan, f"{window} window: {found} for {relative.reference}"
    reference_labels, reference_value = candidates[0]
    if math.isnan(reference_value):
        return math.nan, f"{window} window: the reference has no value"
    minimum = rule.min_samples if relative.min_samples is None else relative.min_samples
    short_of = _samples_guard(index, rule, reference_labels, minimum, "reference: ")
    if short_of:
        return math.nan, short_of
    compared = RELATIVE_MODES[relative.mode](value, reference_value)
    if math.isnan(compared):
        return math.nan, f"{window} window: {relative.mode} undefined (reference {reference_value})"
    return compared, ""


def observe(rule: RuleConfig, index: SnapshotIndex) -> list[Observation]:
    """Every alert of ``rule`` present in the snapshot, with its status."""
    windows = rule.window_names
    per_alert: dict[tuple[tuple[str, str], ...], dict[str, tuple[float, str]]] = {}
    alert_labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for window in windows:
        for labels, value in index.select(rule.metric, rule.match):
            # A metric without a window label (a drift share, say) has one value for both
            # windows; the rule's windows then choose whose events the guard counts.
            if labels.get("window", window) != window:
                continue
            identity = {name: v for name, v in labels.items() if name != "window"}
            key = instance_key(identity)
            alert_labels.setdefault(key, identity)
            windowed = {**labels, "window": window}
            per_alert.setdefault(key, {})[window] = _reading(rule, index, windowed, value)
    compare = COMPARISONS[rule.comparison]
    observations = []
    for key, readings in per_alert.items():
        values = {window: readings[window][0] for window in windows if window in readings}
        reasons = [readings[w][1] if w in readings else f"{w} window: no series" for w in windows]
        missing = [reason for reason in reasons if reason]
        first = values.get(windows[0], math.nan)
        if missing:
            status: Status = "nodata"
        elif all(compare(values[window], rule.threshold) for window in windows):
            status = "breach"
        else:
            status = "ok"
        observations.append(
            Observation(alert_labels[key], status, first, values, "; ".join(missing))
        )
    return observations
