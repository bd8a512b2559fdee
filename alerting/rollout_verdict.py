"""The rollout gate's judgement: the evidence of one step in; promote, hold or rollback out.

:func:`judge` is pure: the evidence (``alerting.rollout_gate`` reads it from the live windows,
``driftline backtest`` from the replayed ones) and the model's :class:`RolloutPolicy` in, a
:class:`Verdict` with every reason and its numbers out. In order:

1. **Evidence.** Each side (candidate, baseline) needs the step's ``minimum_events`` in the window,
   label checks ``minimum_labelled`` labels, the agreement check ``minimum_pairs`` joined inputs.
   Short of them a check *holds*; a regression it shows is reported but never acted on: thin
   traffic (a 1 % canary at night) must not roll a model back.
2. **Checks.** Each :class:`RolloutCheck` compares the candidate with the baseline on the same
   window: within its tolerance it passes; beyond it, and significant (two-proportion z-test, or
   the Wilson bound for agreement; latency and drift share need no test), it is a regression;
   beyond it but not yet significant, it holds.
3. **Rules.** Each alert rule of the policy, for the candidate's series: ``firing`` in the rule
   engine (the evaluator's saved alert states, fresh) is a regression, ``pending`` holds, and a
   breach the gate sees in its own figures that the engine has not confirmed (``for``) holds.
4. **Verdict.** ``rollback`` if a regression stands with both sides at ``minimum_events``;
   else ``hold`` if anything holds or the candidate served for less than
   ``minimum_observation_seconds`` of the window; else ``promote``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from detectors.latency_sketch import LogBucketMapping
from detectors.quality_statistics import (
    ConfusionCounts,
    proportion,
    two_proportion_p_value,
    wilson_interval,
)
from detectors.series import Metric, class_metric
from detectors.window_summary import SeriesWindow
from driftline.events import MAX_TIMESTAMP_MS
from driftline.rollout_config import (
    HIGHER_IS_BETTER,
    LABEL_FIGURES,
    LATENCY_QUANTILES,
    LOWER_IS_BETTER,
    Minimums,
    RolloutCheck,
    RolloutPolicy,
)

__all__ = [
    "AgreementCounts",
    "AlertReading",
    "Evidence",
    "Reason",
    "Verdict",
    "VerdictName",
    "judge",
]

VerdictName = Literal["promote", "hold", "rollback"]
Status = Literal["pass", "hold", "rollback"]


@dataclass(frozen=True)
class Reason:
    """One check, rule or evidence requirement, with the numbers it was decided on."""

    check: str
    status: Status
    message: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "message": self.message, **self.numbers}


@dataclass(frozen=True)
class AgreementCounts:
    """Shadow inputs both versions answered (joined by event_id), and how many they agreed on."""

    pairs: int
    agreed: int
    candidate_events: int  # shadow events looked at (sampled: newest first, capped)


@dataclass(frozen=True)
class AlertReading:
    """A gating rule's alert for the candidate: the engine's state, or what the gate saw now."""

    rule: str
    state: str  # engine: firing | pending | ...; seen now: breach | ok | nodata
    source: Literal["engine", "now"]
    value: float
    labels: Mapping[str, str]
    since_ms: int | None = None


@dataclass(frozen=True)
class Evidence:
    """What one step is judged on: both sides' windows (series of each side added up)."""

    model: str
    candidate: str
    baseline: str
    step: str | None
    window: str
    from_ms: int
    to_ms: int
    candidate_window: SeriesWindow
    baseline_window: SeriesWindow
    candidate_deployments: Sequence[str]
    baseline_versions: Sequence[str]
    candidate_since_ms: int | None  # start of the oldest bucket holding candidate events
    candidate_drift_share: float | None = None
    baseline_drift_share: float | None = None
    drift_note: str = ""
    agreement: AgreementCounts | None = None
    alerts: Sequence[AlertReading] = ()


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    evidence: Evidence
    minimums: Minimums
    reasons: Sequence[Reason]

    def to_dict(self) -> dict[str, Any]:
        evidence = self.evidence
        since = evidence.candidate_since_ms
        observed_s = None if since is None else max(0.0, (evidence.to_ms - since) / 1000)
        return {
            "verdict": self.verdict,
            "model": evidence.model,
            "candidate": evidence.candidate,
            "baseline": evidence.baseline,
            "step": evidence.step,
            "evidence": {
                "window": evidence.window,
                "from": _iso(evidence.from_ms),
                "to": _iso(evidence.to_ms),
                "from_ms": evidence.from_ms,
                "to_ms": evidence.to_ms,
                "candidate": {
                    "events": evidence.candidate_window.events,
                    "labelled": evidence.candidate_window.counter(Metric.LABELLED),
                    "deployments": list(evidence.candidate_deployments),
                    "observed_since": None if since is None else _iso(since),
                    "observed_seconds": observed_s,
                },
                "baseline": {
                    "events": evidence.baseline_window.events,
                    "labelled": evidence.baseline_window.counter(Metric.LABELLED),
                    "versions": list(evidence.baseline_versions),
                },
                "required": {
                    "events": self.minimums.events,
                    "labelled": self.minimums.labelled,
                    "observation_seconds": self.minimums.observation_seconds,
                    "pairs": self.minimums.pairs,
                },
            },
            "reasons": [reason.to_dict() for reason in self.reasons],
        }

    def summary(self) -> str:
        """One line per reason that is not a pass (all of them for a promote)."""
        shown = [r for r in self.reasons if r.status != "pass"] or list(self.reasons)
        lines = [f"{self.verdict}: {self.evidence.model} {self.evidence.candidate}"]
        lines += [f"  [{reason.status}] {reason.message}" for reason in shown]
        return "\n".join(lines)


def _iso(ms: int) -> str:
    if not 0 <= ms <= MAX_TIMESTAMP_MS:  # a tick just after year 9999's last event
        return str(ms)
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def judge(
    policy: RolloutPolicy,
    evidence: Evidence,
    latency: LogBucketMapping,
    step: str | None = None,
) -> Verdict:
    """Steps 1 to 4 of the module docstring."""
    minimums = policy.minimums(step)
    candidate, baseline = evidence.candidate_window, evidence.baseline_window
    reasons: list[Reason] = []
    enough_events = True
    for side, window in (("candidate", candidate), ("baseline", baseline)):
        events = window.events
        status: Status = "pass" if events >= minimums.events else "hold"
        enough_events &= status == "pass"
        reasons.append(
            Reason(
                f"minimum_events.{side}",
                status,
                f"{side} has {events} events in the {evidence.window} window "
                f"({'>=' if status == 'pass' else '<'} {minimums.events})",
                {"samples": events, "required": minimums.events},
            )
        )
    since = evidence.candidate_since_ms
    observed_s = 0.0 if since is None else (evidence.to_ms - since) / 1000
    observed = observed_s >= minimums.observation_seconds
    reasons.append(
        Reason(
            "minimum_observation",
            "pass" if observed else "hold",
            f"candidate observed for {observed_s:.0f} s of the window "
            f"({'>=' if observed else '<'} {minimums.observation_seconds:.0f} s)",
            {"observed_seconds": observed_s, "required": minimums.observation_seconds},
        )
    )
    significance_default = policy.significance
    for check in policy.checks:
        reasons.append(
            _check(check, evidence, minimums, latency, check.significance or significance_default)
        )
    reasons += _rules(policy.rules, evidence.alerts)

    regressions = [reason for reason in reasons if reason.status == "rollback"]
    if regressions and not enough_events:
        # Never roll back on thin traffic: report what it looks like, and wait.
        reasons = [
            Reason(
                r.check,
                "hold",
                r.message + " (not acted on: too few events on a side)",
                r.numbers,
            )
            if r.status == "rollback"
            else r
            for r in reasons
        ]
        regressions = []
    verdict: VerdictName
    if regressions:
        verdict = "rollback"
    elif any(reason.status == "hold" for reason in reasons):
        verdict = "hold"
    else:
        verdict = "promote"
    return Verdict(verdict, evidence, minimums, reasons)


def _check(
    check: RolloutCheck,
    evidence: Evidence,
    minimums: Minimums,
    latency: LogBucketMapping,
    significance: float,
) -> Reason:
    figure = check.figure
    if figure in HIGHER_IS_BETTER or figure in LOWER_IS_BETTER:
        return _proportion_check(check, evidence, minimums, significance)
    if figure in LATENCY_QUANTILES:
        return _latency_check(check, evidence, latency)
    if figure == "drift_share":
        return _drift_check(check, evidence)
    return _agreement_check(check, evidence, minimums, significance)


def _proportion(window: SeriesWindow, check: RolloutCheck) -> tuple[float, float]:
    """``(successes, trials)`` of the check's figure in ``window``."""
    figure = check.figure
    if figure == "error_ratio":
        return window.counter(Metric.ERRORS), window.events
    if figure == "low_confidence_ratio":
        return window.counter(Metric.LOW_CONFIDENCE), window.counter(Metric.CONFIDENCE_COUNT)
    if figure == "accuracy":
        return window.counter(Metric.CORRECT), window.counter(Metric.LABELLED)
    label_class = check.positive_class or ""
    counts = ConfusionCounts(
        true_positive=window.counter(class_metric(Metric.TRUE_POSITIVE, label_class)),
        false_positive=window.counter(class_metric(Metric.FALSE_POSITIVE, label_class)),
        false_negative=window.counter(class_metric(Metric.FALSE_NEGATIVE, label_class)),
    )
    if figure == "precision":
        return counts.true_positive, counts.predicted_positive
    return counts.true_positive, counts.actual_positive


def _proportion_check(
    check: RolloutCheck, evidence: Evidence, minimums: Minimums, significance: float
) -> Reason:
    name = check.name
    if check.figure in LABEL_FIGURES:
        labelled = [
            evidence.candidate_window.counter(Metric.LABELLED),
            evidence.baseline_window.counter(Metric.LABELLED),
        ]
        if min(labelled) < minimums.labelled:
            return Reason(
                name,
                "hold",
                f"{name}: labelled predictions candidate {labelled[0]}, baseline {labelled[1]} "
                f"(each needs {minimums.labelled})",
                {"candidate_labelled": labelled[0], "baseline_labelled": labelled[1]},
            )
    mine_x, mine_n = _proportion(evidence.candidate_window, check)
    base_x, base_n = _proportion(evidence.baseline_window, check)
    mine, base = proportion(mine_x, mine_n), proportion(base_x, base_n)
    numbers: dict[str, Any] = {
        "candidate": _number(mine),
        "baseline": _number(base),
        "candidate_samples": int(mine_n),
        "baseline_samples": int(base_n),
    }
    if math.isnan(mine) or math.isnan(base):
        return Reason(
            name,
            "hold",
            f"{name}: no value (candidate n={mine_n:.0f}, baseline n={base_n:.0f})",
            numbers,
        )
    difference = mine - base
    p_value = two_proportion_p_value(mine_x, mine_n, base_x, base_n)
    worse = -difference if check.figure in HIGHER_IS_BETTER else difference
    tolerance = check.max_drop if check.figure in HIGHER_IS_BETTER else check.max_rise
    assert tolerance is not None
    numbers.update(
        difference=difference,
        tolerance=tolerance,
        p_value=_number(p_value),
        significance=significance,
    )
    described = (
        f"{name} {mine:.4f} vs {base:.4f} ({difference * 100:+.2f} points, limit "
        f"{'-' if check.figure in HIGHER_IS_BETTER else '+'}{tolerance * 100:.2f}), "
        f"p={p_value:.3g}, n={mine_n:.0f}/{base_n:.0f}"
    )
    if worse <= tolerance:
        return Reason(name, "pass", described, numbers)
    if p_value < significance:
        return Reason(
            name, "rollback", f"{described}: worse, significant (< {significance})", numbers
        )
    return Reason(
        name, "hold", f"{described}: worse, not significant yet (>= {significance})", numbers
    )


def _latency_check(check: RolloutCheck, evidence: Evidence, latency: LogBucketMapping) -> Reason:
    name = check.name
    q = LATENCY_QUANTILES[check.figure]
    mine = evidence.candidate_window.latency_quantile(latency, q) / 1000
    base = evidence.baseline_window.latency_quantile(latency, q) / 1000
    counts = (
        evidence.candidate_window.counter(Metric.LATENCY_COUNT),
        evidence.baseline_window.counter(Metric.LATENCY_COUNT),
    )
    numbers: dict[str, Any] = {
        "candidate_seconds": _number(mine),
        "baseline_seconds": _number(base),
        "candidate_samples": counts[0],
        "baseline_samples": counts[1],
    }
    if math.isnan(mine) or math.isnan(base) or base <= 0:
        return Reason(
            name, "hold", f"{name}: no latency on a side (n={counts[0]}/{counts[1]})", numbers
        )
    ratio = mine / base
    assert check.max_ratio is not None
    numbers.update(ratio=ratio, max_ratio=check.max_ratio)
    described = (
        f"{name} {mine * 1000:.1f} ms vs {base * 1000:.1f} ms (x{ratio:.2f}, limit "
        f"x{check.max_ratio:.2f}), n={counts[0]}/{counts[1]}"
    )
    if ratio > check.max_ratio:
        return Reason(name, "rollback", f"{described}: slower", numbers)
    return Reason(name, "pass", described, numbers)


def _drift_check(check: RolloutCheck, evidence: Evidence) -> Reason:
    mine, base = evidence.candidate_drift_share, evidence.baseline_drift_share
    numbers: dict[str, Any] = {"candidate": mine, "baseline": base}
    if mine is None or base is None:
        note = evidence.drift_note or "no drift share on a side"
        return Reason(check.name, "hold", f"drift_share: {note}", numbers)
    rise = mine - base
    assert check.max_rise is not None
    numbers.update(difference=rise, tolerance=check.max_rise)
    described = f"drift_share {mine:.3f} vs {base:.3f} ({rise:+.3f}, limit +{check.max_rise:.3f})"
    if rise > check.max_rise:
        return Reason(check.name, "rollback", f"{described}: drifted", numbers)
    return Reason(check.name, "pass", described, numbers)


def _agreement_check(
    check: RolloutCheck, evidence: Evidence, minimums: Minimums, significance: float
) -> Reason:
    if "shadow" not in evidence.candidate_deployments:
        # A canary answers other inputs than stable: there is nothing to join, nothing to hold.
        return Reason(check.name, "pass", "agreement: the candidate is not in shadow; not judged")
    counts = evidence.agreement
    if counts is None or counts.pairs < minimums.pairs:
        pairs = 0 if counts is None else counts.pairs
        return Reason(
            check.name,
            "hold",
            f"agreement: {pairs} inputs answered by both versions (needs {minimums.pairs})",
            {"pairs": pairs, "required": minimums.pairs},
        )
    rate = counts.agreed / counts.pairs
    assert check.min_value is not None
    _, upper = wilson_interval(counts.agreed, counts.pairs, confidence=1 - 2 * significance)
    numbers = {
        "agreement": rate,
        "pairs": counts.pairs,
        "agreed": counts.agreed,
        "upper_bound": float(upper),
        "min_value": check.min_value,
        "significance": significance,
    }
    described = (
        f"agreement {rate:.4f} on {counts.pairs} joined inputs (limit {check.min_value:.4f}, "
        f"upper bound {float(upper):.4f})"
    )
    if rate >= check.min_value:
        return Reason(check.name, "pass", described, numbers)
    if float(upper) < check.min_value:
        return Reason(check.name, "rollback", f"{described}: disagrees, significant", numbers)
    return Reason(check.name, "hold", f"{described}: below, not significant yet", numbers)


def _rules(rules: Sequence[str], alerts: Sequence[AlertReading]) -> list[Reason]:
    reasons = []
    for alert in alerts:
        where = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if v)
        value = "" if math.isnan(alert.value) else f" (value {alert.value:g})"
        numbers: dict[str, Any] = {
            "rule": alert.rule,
            "state": alert.state,
            "source": alert.source,
            "value": _number(alert.value),
            "labels": dict(alert.labels),
        }
        if alert.source == "engine" and alert.state == "firing":
            reasons.append(
                Reason(
                    f"rule.{alert.rule}",
                    "rollback",
                    f"rule {alert.rule} firing for {where}{value}",
                    numbers,
                )
            )
        elif alert.source == "engine" and alert.state == "pending":
            reasons.append(
                Reason(
                    f"rule.{alert.rule}",
                    "hold",
                    f"rule {alert.rule} pending for {where}{value}",
                    numbers,
                )
            )
        elif alert.source == "now" and alert.state == "breach":
            reasons.append(
                Reason(
                    f"rule.{alert.rule}",
                    "hold",
                    f"rule {alert.rule} breaches now for {where}{value}; "
                    "not confirmed by the rule engine",
                    numbers,
                )
            )
    concerned = {reason.check for reason in reasons}
    for rule in rules:
        if f"rule.{rule}" not in concerned:
            reasons.append(
                Reason(
                    f"rule.{rule}",
                    "pass",
                    f"rule {rule}: neither firing nor pending",
                    {"rule": rule},
                )
            )
    return reasons


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return None if math.isnan(value) else float(value)
