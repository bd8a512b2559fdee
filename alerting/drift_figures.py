"""The drift contributor: every series of a model against the model's reference, every tick.

Per model and tick (:meth:`DriftFigures.contribute`):

1. Look up the model's reference (``references(model)``, normally a ``ReferenceCache``). Without
   one, add ``driftline_reference_present 0`` and stop: latency, confidence and errors are
   still monitored by the other contributors.
2. For every series (version, deployment, segment) in the short or the long window, compute the
   statistics of each reference item in every window (the fast one too, when configured) and
   apply the policy of the ``drift:`` config (``detectors.drift_evaluation``).
3. Add the samples: scores per statistic, p-value, samples, the drifted flag, the drift share,
   and the reference's presence, age and id. Labels come from the reference's items, so their
   number is bounded by the reference; the evaluator's series cap applies on top.
4. Compare each (series, item) verdict with the previous tick's and report every change as a
   :class:`DriftTransition` to ``on_transition`` (``backtest`` prints them; ``evaluate`` logs
   them). A series that disappeared, or a reference that changed, clears its drifts.

A feature whose sequential test (``detectors.sequential_detector``) alarmed within the last
``drift.sequential.hold_seconds`` is drifted whatever its windows say. Its transition names the
window ``sequential`` and the statistic ``cusum``, and is dated at the event that crossed the
threshold, not at the tick that reports it: that is when driftline knew.

State between ticks is the previous verdict per (model, series, item): in memory, rebuilt by the
first tick after a restart (which reports the drifts it finds as new).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alerting import metric_names as names
from alerting.evaluator import ModelWindows
from alerting.snapshot import Snapshot
from detectors.drift_decision import BoolArray, DriftPolicy
from detectors.drift_evaluation import (
    ReferenceComparison,
    SeriesDrift,
    evaluate_series,
    policy_for,
)
from detectors.drift_statistics import DriftStatistic
from detectors.reference import Reference
from detectors.reference_builder import window_counts
from detectors.series import Series, split_field
from detectors.window_store import AlarmEpisode
from detectors.window_summary import SeriesWindow
from driftline.drift_config import DriftConfig

__all__ = ["DriftFigures", "DriftTransition"]

log = logging.getLogger(__name__)

WINDOWS = ("sequential", "fast", "short", "long")
"""Every drift window, in the order a transition names the one responsible (fastest first)."""
DISTANCES = tuple(statistic for statistic in DriftStatistic if not statistic.is_p_value)
SEQUENTIAL_STATISTIC = "cusum"


@dataclass(frozen=True)
class DriftTransition:
    """One change of a drift verdict; :meth:`to_json` is the line ``backtest`` prints."""

    model: str
    version: str
    deployment: str
    segment: dict[str, str] | None
    feature: str
    state: str  # "drifted" | "ok"
    at_ms: int
    stat: str
    value: float | None
    threshold: float
    window: str
    shift_sd: float | None = None
    """Sequential transitions only: the net shift of the alarm episode (``AlarmEpisode``)."""

    def to_json(self) -> str:
        line: dict[str, object] = {
            "kind": "drift",
            "model": self.model,
            "version": self.version,
            "deployment": self.deployment,
            "segment": self.segment,
            "feature": self.feature,
            "state": self.state,
            "at": self.at_ms,
            "stat": self.stat,
            "value": self.value,
            "threshold": self.threshold,
            "window": self.window,
        }
        if self.shift_sd is not None:
            line["shift_sd"] = self.shift_sd
        return json.dumps(line, allow_nan=False)


@dataclass(frozen=True)
class _Verdict:
    drifted: bool
    short: bool
    long: bool
    statistic: DriftStatistic = DriftStatistic.PSI
    threshold: float = math.nan
    fast: bool = False
    sequential: bool = False


@dataclass(frozen=True)
class _Prepared:
    comparison: ReferenceComparison
    policy: DriftPolicy


class DriftFigures:
    """Drift per series and reference item; a ``Contributor`` of ``alerting.evaluator``."""

    def __init__(
        self,
        drift: DriftConfig,
        references: Callable[[str], Reference | None],
        *,
        confidence_bins: int,
        on_transition: Callable[[DriftTransition], None] | None = None,
    ) -> None:
        self.drift = drift
        self.references = references
        self.confidence_bins = confidence_bins
        self.on_transition = on_transition or _log_transition
        policy = drift.sequential_policy()
        self.hold_ms = 0 if policy is None else policy.hold_ms
        self._prepared: dict[tuple[str, str], _Prepared] = {}
        self._verdicts: dict[str, dict[tuple[Series, str], _Verdict]] = {}

    def contribute(self, model: ModelWindows, snapshot: Snapshot) -> None:
        reference = self.references(model.model)
        previous = self._verdicts.pop(model.model, {})
        current: dict[tuple[Series, str], _Verdict] = {}
        if reference is None:
            snapshot.add(names.REFERENCE_PRESENT, (model.model,), 0)
        else:
            snapshot.add(names.REFERENCE_PRESENT, (model.model,), 1)
            snapshot.add(
                names.REFERENCE_AGE,
                (model.model,),
                max(0.0, (model.now_ms - reference.created_at_ms) / 1000),
            )
            snapshot.add(
                names.REFERENCE_INFO,
                (model.model, reference.reference_id, reference.version or ""),
                1,
            )
            prepared = self._prepare(model.model, reference)
            short, long = (model.windows.get(name, {}) for name in ("short", "long"))
            windows = [short, long] if model.fast is None else [short, long, model.fast]
            every_series = sorted(set(short) | set(long))
            empty = SeriesWindow(Series("", ""))
            # Every window of every series in one batched computation.
            statistics = prepared.comparison.statistics(
                [
                    window_counts(reference, window.get(series, empty))
                    for series in every_series
                    for window in windows
                ]
            )
            self._add_alarm_counts(model, snapshot)
            for index, series in enumerate(every_series):
                of_series = statistics[len(windows) * index : len(windows) * (index + 1)]
                drift = evaluate_series(
                    prepared.comparison,
                    prepared.policy,
                    of_series[0],
                    of_series[1],
                    fast=of_series[2] if len(of_series) > 2 else None,
                    sequential=self._held(model, series, prepared.comparison.items),
                )
                self._add_samples(model.model, series, drift, snapshot)
                self._track(model, series, drift, prepared, previous, current)
        # Whatever was drifted and is no longer evaluated (series gone, reference changed or
        # removed) is cleared, so a drift never stays open without anything behind it.
        for (series, item), verdict in sorted(previous.items()):
            if verdict.drifted:
                statistic = (str(verdict.statistic), verdict.threshold)
                self._report(model, series, item, "ok", "short", statistic, None)
        self._verdicts[model.model] = current

    def _prepare(self, model: str, reference: Reference) -> _Prepared:
        key = (model, reference.reference_id)
        prepared = self._prepared.get(key)
        if prepared is None:
            self._prepared = {k: v for k, v in self._prepared.items() if k[0] != model}
            comparison = ReferenceComparison(reference, self.confidence_bins)
            policy, unknown = policy_for(self.drift, model, comparison)
            if unknown:
                log.warning(
                    "model %s: drift thresholds for %s name no item of reference %s; ignored",
                    model,
                    unknown,
                    reference.field_tag,
                )
            if comparison.skipped:
                log.warning(
                    "model %s: reference %s has %d confidence bins, the consumers %d; confidence "
                    "drift is not evaluated",
                    model,
                    reference.field_tag,
                    reference.confidence.bin_count - 3 if reference.confidence else 0,
                    self.confidence_bins,
                )
            prepared = self._prepared[key] = _Prepared(comparison, policy)
        return prepared

    def _held(self, model: ModelWindows, series: Series, items: Sequence[str]) -> BoolArray | None:
        """Which items an alarm of the sequential test holds drifted; ``None`` if none can be."""
        if not model.sequential or series.segment:
            return None
        held = [
            episode is not None and self._holds(model, episode)
            for episode in (model.sequential.get(f"{series.key}|{item}") for item in items)
        ]
        return np.array(held, dtype=np.bool_)

    def _holds(self, model: ModelWindows, episode: AlarmEpisode) -> bool:
        return model.now_ms - episode.last_ms <= self.hold_ms

    def _add_alarm_counts(self, model: ModelWindows, snapshot: Snapshot) -> None:
        for field, episode in sorted(model.sequential.items()):
            series, feature = split_field(field)
            labels = (model.model, *series, feature)
            snapshot.add(names.SEQUENTIAL_ALARMS_TOTAL, labels, episode.count)
            snapshot.add(names.SEQUENTIAL_EPISODES_TOTAL, labels, episode.episodes)
            if episode.shift_sd is not None and self._holds(model, episode):
                snapshot.add(names.SEQUENTIAL_SHIFT, labels, episode.shift_sd)

    @staticmethod
    def _add_samples(model: str, series: Series, drift: SeriesDrift, snapshot: Snapshot) -> None:
        for window_name, window in drift.windows.items():
            p_values = window.statistics[DriftStatistic.CHI_SQUARE_P_VALUE].tolist()
            samples = window.samples.tolist()
            scores = {s: window.statistics[s].tolist() for s in DISTANCES}
            for index, item in enumerate(drift.items):
                labels = (model, *series, window_name, item)
                snapshot.add(names.DRIFT_SAMPLES, labels, samples[index])
                if not math.isnan(p_values[index]):
                    snapshot.add(names.DRIFT_P_VALUE, labels, p_values[index])
                for statistic, values in scores.items():
                    if not math.isnan(values[index]):
                        snapshot.add(names.DRIFT_SCORE, (*labels, str(statistic)), values[index])
        nodata = drift.nodata.tolist()
        for index, drifted in enumerate(drift.drifted.tolist()):
            if not nodata[index]:
                snapshot.add(names.DRIFTED, (model, *series, drift.items[index]), int(drifted))
        if not math.isnan(drift.drift_share):
            snapshot.add(names.DRIFT_SHARE, (model, *series), drift.drift_share)

    def _track(
        self,
        model: ModelWindows,
        series: Series,
        drift: SeriesDrift,
        prepared: _Prepared,
        previous: dict[tuple[Series, str], _Verdict],
        current: dict[tuple[Series, str], _Verdict],
    ) -> None:
        drifted = drift.drifted.tolist()
        alone = {name: verdicts.tolist() for name, verdicts in drift.window_drifted.items()}
        never = [False] * len(drift.items)
        fast = alone.get("fast", never)
        sequential = alone.get("sequential", never)
        evaluated = [name for name in WINDOWS if name in alone]
        for index, item in enumerate(drift.items):
            statistic, threshold = _reported_statistic(prepared.policy, item)
            verdict = _Verdict(
                drifted[index],
                alone["short"][index],
                alone["long"][index],
                statistic,
                threshold,
                fast[index],
                sequential[index],
            )
            before = previous.pop((series, item), None) or _Verdict(False, False, False)
            current[(series, item)] = verdict
            if verdict.drifted == before.drifted:
                continue
            window = _responsible_window(before, verdict, evaluated)
            at_ms = shift_sd = None
            if window == "sequential":
                episode = model.sequential[f"{series.key}|{item}"]
                reported = (SEQUENTIAL_STATISTIC, episode.threshold)
                value: float | None = episode.statistic if verdict.drifted else None
                at_ms = episode.start_ms if verdict.drifted else None
                shift_sd = episode.shift_sd
            else:
                reported = (str(statistic), threshold)
                value = float(drift.windows[window].statistics[statistic][index])
                value = None if math.isnan(value) else value
            state = "drifted" if verdict.drifted else "ok"
            self._report(
                model, series, item, state, window, reported, value, at_ms=at_ms, shift_sd=shift_sd
            )

    def _report(
        self,
        model: ModelWindows,
        series: Series,
        item: str,
        state: str,
        window: str,
        statistic: tuple[str, float],
        value: float | None,
        at_ms: int | None = None,
        shift_sd: float | None = None,
    ) -> None:
        self.on_transition(
            DriftTransition(
                model=model.model,
                version=series.version,
                deployment=series.deployment,
                segment=_segment(series.segment),
                feature=item,
                state=state,
                at_ms=model.now_ms if at_ms is None else at_ms,
                stat=statistic[0],
                value=value,
                threshold=statistic[1],
                window=window,
                shift_sd=shift_sd,
            )
        )


def _responsible_window(before: _Verdict, now: _Verdict, evaluated: Sequence[str]) -> str:
    """Of the ``evaluated`` windows (fastest first), the one whose own verdict moved towards the
    new state, else the first that agrees with it, else the short one."""
    target = now.drifted
    moved = [
        name
        for name in evaluated
        if getattr(now, name) == target and getattr(before, name) != target
    ]
    if moved:
        return moved[0]
    agreeing = [name for name in evaluated if getattr(now, name) == target]
    return agreeing[0] if agreeing else "short"


def _reported_statistic(policy: DriftPolicy, item: str) -> tuple[DriftStatistic, float]:
    """The statistic a transition reports, with the item's threshold: the distance the policy
    compares with a threshold, or, for a pure p-value policy, the p-value and the FDR level."""
    distance = policy.distance_statistic
    if distance is None:
        return policy.statistic, policy.false_discovery_rate
    default = policy.distance_threshold
    assert default is not None
    return distance, float(policy.per_feature_thresholds.get(item, default))


def _segment(segment: str) -> dict[str, str] | None:
    if not segment:
        return None
    attribute, _, value = segment.partition("=")
    return {attribute: value.replace("%7C", "|").replace("%25", "%")}


def _log_transition(transition: DriftTransition) -> None:
    log.info("drift transition %s", transition.to_json())
