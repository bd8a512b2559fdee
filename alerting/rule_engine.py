"""The built-in rule engine: the alert states of every rule, advanced once per snapshot.

Lifecycle of one alert (one rule, one label set), evaluated at each snapshot's time ``at``:

1. ``inactive``: the rule does not breach (or the alert was never seen).
2. ``pending``: it breaches; it has since ``active_since``. A tick without the breach ends it.
3. ``firing``: it breached at every tick for ``for``. It stays firing while it breaches, and for
   ``keep_firing_for`` after the first tick that does not (the anti-flap hold Prometheus has).
4. ``resolved``: it stopped firing; the next tick without a breach makes it ``inactive``.
5. ``nodata``: the series is missing, has no value, or has fewer events than ``min_samples``
   (its own or its reference's). It resets ``for``: thin traffic can neither start nor complete
   a pending alert, and a firing alert that runs out of data ends (after ``keep_firing_for``)
   instead of rolling anything back.

These are Prometheus' own semantics (``for``, ``keep_firing_for``), so the built-in path and the
exported rules fire at the same evaluations; ``nodata`` is what Prometheus cannot express (there,
the alert just does not exist) and what a rollback must never act on.

Time is the snapshot's: wall-clock for ``driftline evaluate``, event time for a backtest replay
(:meth:`RuleEngine.evaluate` takes ``at_ms``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from alerting import metric_names as names
from alerting.rule_conditions import Labels, Observation, SnapshotIndex, instance_key, observe
from alerting.snapshot import Snapshot
from driftline.alerting_config import (
    INSTANCE_LABELS,
    AlertingConfig,
    AlertState,
    RuleConfig,
    template_fields,
)
from driftline.config import ConfigError

__all__ = ["Alert", "AlertEvent", "RuleEngine", "check_rules", "render"]

log = logging.getLogger(__name__)

# An alert absent from the snapshots (its series gone) is forgotten after this long without data.
FORGET_AFTER_MS = 3_600_000


def render(template: str, rule: RuleConfig, labels: Labels, value: float, window: str) -> str:
    """A rule template with its placeholders filled (the engine's side of the one template)."""
    fields: dict[str, object] = {name: labels.get(name, "") for name in INSTANCE_LABELS}
    fields.update({name: labels.get(name, "") for name in rule.match})
    fields.update(rule=rule.name, threshold=f"{rule.threshold:g}", window=window, value=value)
    for name, spec in template_fields(template):
        if name == "value" and not spec:
            fields["value"] = f"{value:g}"
    return template.format(**fields)


@dataclass
class Alert:
    """The engine's state of one alert."""

    rule: RuleConfig
    labels: dict[str, str]
    state: AlertState = "inactive"
    active_since_ms: int | None = None
    fired_at_ms: int | None = None
    keep_firing_since_ms: int | None = None
    last_seen_ms: int = 0
    value: float = math.nan
    values: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class AlertEvent:
    """An alert's state at one moment, with what on-call needs to act on it."""

    rule: RuleConfig
    labels: Labels
    state: AlertState
    previous: AlertState
    at_ms: int
    value: float
    values: Mapping[str, float]
    starts_at_ms: int | None  # when it started firing (the incident's start), if it did
    reason: str
    summary: str
    description: str
    runbook_url: str

    @property
    def model(self) -> str:
        return self.labels.get("model", "")

    @property
    def version(self) -> str:
        return self.labels.get("version", "")


def check_rules(
    rules: Sequence[RuleConfig], metrics: Iterable[names.MetricName] = names.CATALOGUE
) -> list[str]:
    """Check rules against the metric catalogue: raise :class:`ConfigError` naming the rule and
    key; return warnings (a metric not catalogued yet is allowed: it may be exported later)."""
    known = {metric.name: metric for metric in metrics}
    errors: list[str] = []
    warnings: list[str] = []
    for rule in rules:
        where = f"rules.{rule.name}"
        metric = known.get(rule.metric)
        if metric is None:
            warnings.append(f"{where}.metric = {rule.metric!r}: not a metric driftline exports yet")
        else:
            errors += _check_labels(where, rule, metric)
        errors += _check_samples_metric(where, rule, known)
        if rule.relative is not None and rule.relative.metric is not None:
            reference = known.get(rule.relative.metric)
            if reference is None:
                warnings.append(
                    f"{where}.relative.metric = {rule.relative.metric!r}: not exported yet"
                )
    if errors:
        raise ConfigError("invalid rules:\n  " + "\n  ".join(errors))
    return warnings


def _check_labels(where: str, rule: RuleConfig, metric: names.MetricName) -> list[str]:
    errors = []
    labels = set(metric.labels)
    for name in rule.match:
        if name not in labels:
            errors.append(f"{where}.match.{name}: {rule.metric} has labels {sorted(labels)}")
    for name in set(labels) - {*INSTANCE_LABELS, "window", *rule.match}:
        errors.append(
            f"{where}.match.{name}: {rule.metric} is split by {name!r}; pin it to one value"
        )
    if rule.min_samples and not set(names.SERIES_LABELS) <= labels:
        errors.append(f"{where}.min_samples: {rule.metric} is not per series; set 0")
    if rule.relative is not None:
        for name in [*rule.relative.reference, *rule.relative.ignoring]:
            if name not in labels:
                errors.append(f"{where}.relative: {rule.metric} has no label {name!r}")
    return errors


def _check_samples_metric(
    where: str, rule: RuleConfig, known: dict[str, names.MetricName]
) -> list[str]:
    counted = known.get(rule.samples_metric)
    if rule.min_samples and counted is not None and set(counted.labels) != set(names.WINDOW_LABELS):
        return [
            f"{where}.samples_metric = {rule.samples_metric!r}: not a per-window count "
            f"(labels {list(counted.labels)})"
        ]
    return []


class RuleEngine:
    """Advances every rule's alerts on each snapshot and reports the changes."""

    def __init__(self, rules: Sequence[RuleConfig], alerting: AlertingConfig) -> None:
        self.rules = list(rules)
        self.alerting = alerting
        self.alerts: dict[tuple[str, tuple[tuple[str, str], ...]], Alert] = {}

    def evaluate(self, snapshot: Snapshot, at_ms: int | None = None) -> list[AlertEvent]:
        """Advance every alert to ``at_ms`` (default: the snapshot's time); return the changes."""
        now_ms = snapshot.taken_at_ms if at_ms is None else at_ms
        index = SnapshotIndex(snapshot)
        changes: list[AlertEvent] = []
        for rule in self.rules:
            seen = set()
            for observation in observe(rule, index):
                key = (rule.name, instance_key(observation.labels))
                seen.add(key)
                alert = self.alerts.get(key)
                if alert is None:
                    alert = self.alerts[key] = Alert(rule, dict(observation.labels))
                alert.last_seen_ms = now_ms
                changes += self._advance(alert, observation, now_ms)
            for key, alert in list(self.alerts.items()):
                if key[0] != rule.name or key in seen:
                    continue
                if alert.state == "inactive" or now_ms - alert.last_seen_ms > FORGET_AFTER_MS:
                    del self.alerts[key]
                    continue
                absent = Observation(alert.labels, "nodata", math.nan, {}, "no series")
                changes += self._advance(alert, absent, now_ms)
        return changes

    def _advance(self, alert: Alert, seen: Observation, now_ms: int) -> list[AlertEvent]:
        rule = alert.rule
        before = alert.state
        alert.value, alert.values, alert.reason = seen.value, seen.values, seen.reason
        if seen.status == "breach":
            alert.keep_firing_since_ms = None
            if before in ("inactive", "resolved", "nodata"):
                alert.active_since_ms = now_ms
                alert.state = "pending"
            if alert.state == "pending" and now_ms - _ms(alert.active_since_ms) >= _ms_of(
                rule.for_seconds
            ):
                alert.state = "firing"
                alert.fired_at_ms = now_ms
        elif before == "firing":
            if alert.keep_firing_since_ms is None:
                alert.keep_firing_since_ms = now_ms
            if now_ms - alert.keep_firing_since_ms >= _ms_of(rule.keep_firing_for_seconds):
                alert.state = "nodata" if seen.status == "nodata" else "resolved"
                alert.keep_firing_since_ms = None
        elif seen.status == "nodata":
            alert.state = "nodata"
        else:
            alert.state = "inactive"
        if alert.state not in ("pending", "firing"):
            alert.active_since_ms = None
        if alert.state == before:
            return []
        event = self.event(alert, before, now_ms)
        if alert.state != "firing":
            alert.fired_at_ms = None
        return [event]

    def event(self, alert: Alert, previous: AlertState, now_ms: int) -> AlertEvent:
        rule = alert.rule
        window = rule.window_names[0]
        return AlertEvent(
            rule=rule,
            labels=dict(alert.labels),
            state=alert.state,
            previous=previous,
            at_ms=now_ms,
            value=alert.value,
            values=dict(alert.values),
            starts_at_ms=alert.fired_at_ms,
            reason=alert.reason,
            summary=render(rule.summary, rule, alert.labels, alert.value, window),
            description=render(rule.description, rule, alert.labels, alert.value, window),
            runbook_url=self.alerting.runbook_url(rule),
        )

    def export_state(self) -> list[dict[str, object]]:
        """The timers of every alert that is not inactive, as JSON-ready records.

        An evaluator taking over from another (see ``alerting.evaluator_lease``) restores them,
        so a pending alert keeps its ``for`` progress and a firing one its incident start.
        """
        return [
            {
                "rule": alert.rule.name,
                "labels": alert.labels,
                "state": alert.state,
                "active_since_ms": alert.active_since_ms,
                "fired_at_ms": alert.fired_at_ms,
                "keep_firing_since_ms": alert.keep_firing_since_ms,
                "last_seen_ms": alert.last_seen_ms,
            }
            for alert in self.alerts.values()
            if alert.state != "inactive"
        ]

    def restore_state(self, records: Iterable[Mapping[str, object]]) -> None:
        """Replace the alerts with exported ones; records of rules no longer configured drop."""
        rules = {rule.name: rule for rule in self.rules}
        self.alerts = {}
        for record in records:
            rule = rules.get(str(record["rule"]))
            if rule is None:
                continue
            labels = {str(k): str(v) for k, v in dict(record["labels"]).items()}  # type: ignore[call-overload]
            alert = Alert(
                rule,
                labels,
                state=record["state"],  # type: ignore[arg-type]
                active_since_ms=record.get("active_since_ms"),  # type: ignore[arg-type]
                fired_at_ms=record.get("fired_at_ms"),  # type: ignore[arg-type]
                keep_firing_since_ms=record.get("keep_firing_since_ms"),  # type: ignore[arg-type]
                last_seen_ms=int(record.get("last_seen_ms") or 0),  # type: ignore[call-overload]
            )
            self.alerts[(rule.name, instance_key(labels))] = alert

    def firing(self, now_ms: int) -> list[AlertEvent]:
        """Every firing alert as of now (notifiers re-send them)."""
        return [
            self.event(alert, "firing", now_ms)
            for alert in self.alerts.values()
            if alert.state == "firing"
        ]

    def healthy_versions(self, snapshot: Snapshot) -> dict[str, set[str]]:
        """Per model, the versions serving enough traffic with no alert pending or firing.

        "Enough" is the largest ``min_samples`` of the rules (at least one event) in the short
        window, over all of the version's traffic. The rollback executor remembers when each
        version was last healthy, to find a target when no stable version is configured.
        """
        needed = max([1, *(rule.min_samples for rule in self.rules)])
        troubled = {
            (alert.labels.get("model", ""), alert.labels.get("version", ""))
            for alert in self.alerts.values()
            if alert.state in ("pending", "firing")
        }
        healthy: dict[str, set[str]] = {}
        for sample in snapshot.samples:
            if sample.metric != names.WINDOW_EVENTS or sample.value < needed:
                continue
            model, version, _, segment, window = sample.labels
            if segment == "" and window == "short" and (model, version) not in troubled:
                healthy.setdefault(model, set()).add(version)
        return healthy

    def add_samples(self, snapshot: Snapshot) -> None:
        """Export each alert's state and compared values into ``snapshot``."""
        for alert in self.alerts.values():
            labels = (alert.rule.name, *(alert.labels.get(name, "") for name in INSTANCE_LABELS))
            snapshot.add(names.ALERT_STATE, (*labels, alert.state), 1)
            for window, value in alert.values.items():
                snapshot.add(names.ALERT_VALUE, (*labels, window), value)


def _ms(value: int | None) -> int:
    return 0 if value is None else value


def _ms_of(seconds: float) -> int:
    return round(seconds * 1000)
