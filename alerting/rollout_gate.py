"""The rollout gate: reads the evidence of one rollout step on demand and judges it.

:meth:`RolloutGate.verdict` answers ``GET /v1/verdict`` (``alerting.rollout_gate_server``),
``driftline verdict`` and ``backtest --verdict-every``. Per request, in order:

1. Check the request: a known model, a candidate distinct from the baseline, a step the policy
   names (when it names any). A bad one raises :class:`VerdictRequestError` (400 or 404).
2. Read the model's windows with the evaluator's own machinery (``Evaluator.read_model`` and the
   traffic, drift and quality contributors) into a snapshot of its own, at the request's time:
   the evidence is as fresh as the windows, and computed exactly as ``/metrics`` computes it, but
   without waiting for (or depending on) an evaluator tick.
3. Split the policy's window into the two sides. The candidate is the version's canary and
   shadow series (its stable series if it has no other); the baseline is ``baseline=`` version,
   else ``models.<m>.stable_version``, else every stable series of another version. Each side's
   series are added up (``merge_windows``), whole traffic only (no segments).
4. Find since when the candidate served in the window (its events per bucket,
   ``WindowStore.read_bucket_fields``), each side's drift share (``driftline_drift_share_ratio``,
   the side's busiest series), shadow agreement (``alerting.shadow_agreement``) and the policy's
   alert rules: the rule engine's saved states (``driftline evaluate`` saves them every tick),
   fresh ones only, and the rules read on this snapshot.
5. :func:`alerting.rollout_verdict.judge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alerting import metric_names as names
from alerting.drift_figures import DriftFigures
from alerting.evaluator import Evaluator
from alerting.quality_figures import QualityFigures, merge_windows
from alerting.rollout_verdict import (
    AgreementCounts,
    AlertReading,
    Evidence,
    Verdict,
    judge,
)
from alerting.rule_conditions import SnapshotIndex, observe
from alerting.snapshot import Snapshot, SnapshotCollector
from detectors.latency_sketch import LogBucketMapping
from detectors.quality_reference import QualityReference
from detectors.reference import Reference
from detectors.series import Metric, Series, field_name
from detectors.window_store import WindowStore
from detectors.window_summary import SeriesWindow
from driftline.config import Config, ConfigError
from driftline.rollout_config import LABEL_FIGURES

__all__ = ["AgreementSource", "RolloutGate", "VerdictRequestError", "check_rollout_config"]

AgreementSource = Callable[[str, str, Sequence[str], int, int], AgreementCounts | None]
"""``(model, candidate, baseline versions, from ms, to ms)`` -> shadow agreement, if known."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class VerdictRequestError(ValueError):
    """A verdict request that cannot be answered; ``status`` is the HTTP status (400, 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_rollout_config(config: Config) -> None:
    """Refuse policies naming unknown alert rules or positive classes, naming the key."""
    rules = {rule.name for rule in config.rules}
    problems = []
    for model, policy in config.rollout.models.items():
        where = f"rollout.models.{model}"
        for rule in policy.rules:
            if rule not in rules:
                problems.append(f"{where}.rules = {rule!r}: no rule of that name in rules:")
        labels = config.model(model).labels
        classes = [] if labels is None else labels.positive_classes
        for index, check in enumerate(policy.checks):
            if check.figure in LABEL_FIGURES and labels is None:
                problems.append(
                    f"{where}.checks.{index}.figure = {check.figure!r}: models.{model} has no "
                    "labels section"
                )
            elif check.positive_class is not None and check.positive_class not in classes:
                problems.append(
                    f"{where}.checks.{index}.class = {check.positive_class!r}: not one of "
                    f"models.{model}.labels.positive_classes {classes}"
                )
    if problems:
        raise ConfigError("invalid rollout policies:\n  " + "\n  ".join(problems))


class RolloutGate:
    """Judges rollout steps from a window store.

    One verdict at a time: the drift contributor keeps per-model state between calls, so the HTTP
    server serialises requests to one gate (a verdict takes milliseconds).
    """

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        *,
        drift_references: Callable[[str], Reference | None] = lambda model: None,
        quality_references: Callable[[str], QualityReference | None] | None = None,
        alert_states: Callable[[], Sequence[Mapping[str, Any]]] = lambda: (),
        agreement: AgreementSource | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        check_rollout_config(config)
        self.config = config
        self.store = store
        self.clock_ms = clock_ms
        self.alert_states = alert_states
        self.agreement = agreement
        self.latency = LogBucketMapping(config.monitoring.latency_relative_accuracy)
        drift = DriftFigures(
            config.drift,
            drift_references,
            confidence_bins=config.monitoring.confidence_bins,
            on_transition=lambda transition: None,  # the evaluator reports transitions, not us
        )
        quality = QualityFigures(config, store, quality_references)
        self.evaluator = Evaluator(
            config, store, SnapshotCollector(), contributors=[drift, quality], clock_ms=clock_ms
        )
        self.rules = {rule.name: rule for rule in config.rules}
        windows = config.windows
        self.window_ms = {
            "short": windows.short_seconds * 1000,
            "long": windows.long_seconds * 1000,
        }
        # An engine alert not refreshed for this long comes from an evaluator that stopped.
        self.stale_after_ms = max(30_000, round(3 * config.evaluator.tick_seconds * 1000))

    def verdict(
        self,
        model: str,
        candidate: str,
        baseline: str | None = None,
        step: str | None = None,
    ) -> Verdict:
        """Steps 1 to 5 of the module docstring."""
        policy = self.config.rollout.policy(model)
        if not candidate:
            raise VerdictRequestError(400, "candidate is required")
        if baseline is not None and baseline == candidate:
            raise VerdictRequestError(400, f"baseline {baseline!r} is the candidate itself")
        if step is not None and policy.steps and step not in policy.steps:
            raise VerdictRequestError(
                400,
                f"step {step!r} is not one of rollout.models.{model}.steps {sorted(policy.steps)}",
            )
        if model not in self.config.models and model not in self.store.models():
            raise VerdictRequestError(404, f"unknown model {model!r}")

        now_ms = self.clock_ms()
        windows = self.evaluator.read_model(model, now_ms)
        snapshot = Snapshot(taken_at_ms=now_ms)
        for contributor in self.evaluator.contributors:
            contributor.contribute(windows, snapshot)
        whole = {
            series: window
            for series, window in windows.windows[policy.window].items()
            if not series.segment
        }
        mine = [s for s in whole if s.version == candidate and s.deployment != "stable"]
        mine = mine or [s for s in whole if s.version == candidate]
        theirs, baseline_name = self._baseline(model, whole, candidate, baseline)
        candidate_window = merge_windows(Series(candidate, "candidate"), (whole[s] for s in mine))
        baseline_window = merge_windows(
            Series(baseline_name, "baseline"), (whole[s] for s in theirs)
        )
        window_ms = self.window_ms[policy.window]
        index = SnapshotIndex(snapshot)
        candidate_share, baseline_share, drift_note = self._drift(model, index, whole, mine, theirs)
        baseline_versions = sorted({s.version for s in theirs})
        from_ms = now_ms - window_ms
        evidence = Evidence(
            model=model,
            candidate=candidate,
            baseline=baseline_name,
            step=step,
            window=policy.window,
            from_ms=from_ms,
            to_ms=now_ms,
            candidate_window=candidate_window,
            baseline_window=baseline_window,
            candidate_deployments=sorted({s.deployment for s in mine}),
            baseline_versions=baseline_versions,
            candidate_since_ms=self._since(model, mine, window_ms, now_ms),
            candidate_drift_share=candidate_share,
            baseline_drift_share=baseline_share,
            drift_note=drift_note,
            agreement=(
                None
                if self.agreement is None or not any(s.deployment == "shadow" for s in mine)
                else self.agreement(model, candidate, baseline_versions, from_ms, now_ms)
            ),
            alerts=self._alerts(model, candidate, policy.rules, index, now_ms),
        )
        return judge(policy, evidence, self.latency, step)

    def _baseline(
        self,
        model: str,
        whole: Mapping[Series, SeriesWindow],
        candidate: str,
        baseline: str | None,
    ) -> tuple[list[Series], str]:
        if baseline is None:
            baseline = self.config.model(model).stable_version
        if baseline is not None:
            return [s for s in whole if s.version == baseline], baseline
        return [s for s in whole if s.deployment == "stable" and s.version != candidate], "stable"

    def _since(self, model: str, mine: Sequence[Series], window_ms: int, now_ms: int) -> int | None:
        """Start of the oldest bucket of the window in which the candidate has events."""
        if not mine:
            return None
        fields = [field_name(series, Metric.EVENTS) for series in mine]
        buckets = self.store.read_bucket_fields(model, window_ms, now_ms, fields)
        served = [start for start, counts in buckets if sum(counts) > 0]
        return min(served) if served else None

    @staticmethod
    def _drift(
        model: str,
        index: SnapshotIndex,
        whole: Mapping[Series, SeriesWindow],
        mine: Sequence[Series],
        theirs: Sequence[Series],
    ) -> tuple[float | None, float | None, str]:
        present = index.select(names.REFERENCE_PRESENT.name, {"model": model})
        if not present or present[0][1] == 0:
            return None, None, f"no drift reference for {model} (driftline baseline)"
        shares = {
            (labels["version"], labels["deployment"]): value
            for labels, value in index.select(names.DRIFT_SHARE.name, {"model": model})
            if labels.get("segment", "") == ""
        }

        def busiest(side: Sequence[Series]) -> float | None:
            ordered = sorted(side, key=lambda s: whole[s].events, reverse=True)
            return shares.get((ordered[0].version, ordered[0].deployment)) if ordered else None

        candidate, baseline = busiest(mine), busiest(theirs)
        note = (
            ""
            if candidate is not None and baseline is not None
            else ("too few samples for a drift share (drift.minimum_samples per feature) on a side")
        )
        return candidate, baseline, note

    def _alerts(
        self,
        model: str,
        candidate: str,
        rule_names: Sequence[str],
        index: SnapshotIndex,
        now_ms: int,
    ) -> list[AlertReading]:
        if not rule_names:
            return []
        wanted = set(rule_names)
        readings = []

        def concerns(labels: Mapping[str, str]) -> bool:
            return labels.get("model") == model and labels.get("version") == candidate

        for record in self.alert_states():
            labels = {str(k): str(v) for k, v in dict(record.get("labels") or {}).items()}
            last_seen = int(record.get("last_seen_ms") or 0)
            if (
                record.get("rule") in wanted
                and concerns(labels)
                and now_ms - last_seen <= self.stale_after_ms
            ):
                since = record.get("fired_at_ms") or record.get("active_since_ms")
                readings.append(
                    AlertReading(
                        rule=str(record["rule"]),
                        state=str(record.get("state", "")),
                        source="engine",
                        value=float("nan"),
                        labels=labels,
                        since_ms=None if since is None else int(since),
                    )
                )
        for name in rule_names:
            rule = self.rules[name]
            for observation in observe(rule, index):
                if concerns(observation.labels):
                    readings.append(
                        AlertReading(
                            rule=name,
                            state=observation.status,
                            source="now",
                            value=observation.value,
                            labels=dict(observation.labels),
                        )
                    )
        return readings
