"""Drift of series against a reference: statistics equal scipy's on the same histograms, the
policy from config, and the drift contributor's samples and transitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from alerting import metric_names as names
from alerting.drift_figures import DriftFigures, DriftTransition
from alerting.evaluator import ModelWindows
from alerting.snapshot import Snapshot
from detectors.drift_evaluation import ReferenceComparison, policy_for
from detectors.drift_statistics import CHI_SQUARE_PSEUDO_COUNT, DriftStatistic
from detectors.reference import FeatureReference, Reference
from detectors.series import Series
from detectors.window_summary import SeriesWindow
from detectors.window_update import feature_metric, prediction_metric
from driftline.config import parse_config

S = DriftStatistic


def reference(rng: np.random.Generator) -> Reference:
    numeric = [
        FeatureReference.numeric(
            f"n{i}",
            edges=tuple(np.linspace(-2, 2, 6)),
            counts=tuple(rng.integers(0, 400, 8).tolist()),
            bin_values=tuple(np.linspace(-2.5, 2.5, 7)),
            spread=1.0 + i,
        )
        for i in range(3)
    ]
    wide = FeatureReference.numeric(
        "wide",
        edges=tuple(np.linspace(0, 9, 10)),
        counts=tuple(rng.integers(1, 90, 12).tolist()),
        bin_values=tuple(np.linspace(-1, 10, 11)),
        spread=3.0,
    )
    category = FeatureReference.categorical(
        "c", categories=("a", "b", "c"), counts=tuple(rng.integers(0, 500, 5).tolist())
    )
    prediction = FeatureReference.categorical(
        "@prediction", categories=("yes", "no"), counts=(0, 3, 400, 600)
    )
    return Reference("m", 0, (*numeric, category, wide), prediction=prediction)


def test_every_statistic_equals_scipy_on_the_same_histograms() -> None:
    rng = np.random.default_rng(3)
    ref = reference(rng)
    comparison = ReferenceComparison(ref, confidence_bins=20)
    windows = [
        {item.name: rng.integers(0, 300, item.bin_count) for item in ref.items} for _ in range(3)
    ]
    windows[2]["n1"] = np.zeros(8, dtype=np.int64)  # an empty window: nan, never an error
    results = comparison.statistics(windows)

    for counts, result in zip(windows, results, strict=True):
        for index, item in enumerate(ref.items):
            p = np.asarray(item.counts, dtype=float)
            q = counts[item.name].astype(float)
            assert result.samples[index] == q.sum()
            if q.sum() == 0:
                assert all(math.isnan(result.statistics[s][index]) for s in S)
                continue
            pp, qq = p / p.sum(), q / q.sum()
            assert result.statistics[S.JENSEN_SHANNON][index] == pytest.approx(
                jensenshannon(pp, qq, base=2), abs=1e-12
            )
            assert result.statistics[S.HELLINGER][index] == pytest.approx(
                math.sqrt(np.sum((np.sqrt(pp) - np.sqrt(qq)) ** 2) / 2), abs=1e-12
            )
            floor_p, floor_q = np.maximum(pp, 1e-4), np.maximum(qq, 1e-4)
            assert result.statistics[S.PSI][index] == pytest.approx(
                np.sum((floor_q - floor_p) * np.log(floor_q / floor_p)), rel=1e-12
            )
            smoothed = p + CHI_SQUARE_PSEUDO_COUNT
            expected = smoothed / smoothed.sum() * q.sum()
            assert result.statistics[S.CHI_SQUARE_P_VALUE][index] == pytest.approx(
                stats.chisquare(q, expected).pvalue, rel=1e-9, abs=1e-300
            )
            if not item.ordered:
                assert math.isnan(result.statistics[S.KOLMOGOROV_SMIRNOV][index])
                assert math.isnan(result.statistics[S.WASSERSTEIN][index])
                continue
            # Order-dependent statistics: over the ordered bins, without the missing one.
            values = np.asarray(item.bin_values)
            assert result.statistics[S.WASSERSTEIN][index] == pytest.approx(
                stats.wasserstein_distance(values, values, p[1:], q[1:]) / item.spread, rel=1e-9
            )
            cdf_gap = np.cumsum(p[1:] / p[1:].sum() - q[1:] / q[1:].sum())
            assert result.statistics[S.KOLMOGOROV_SMIRNOV][index] == pytest.approx(
                np.max(np.abs(cdf_gap)), abs=1e-12
            )


def test_policy_for_takes_thresholds_of_the_reference_items_only() -> None:
    config = parse_config(
        {
            "drift": {
                "per_feature_thresholds": {"n0": 0.3, "gone": 0.2},
                "models": {"m": {"per_feature_thresholds": {"@prediction": 0.5}}},
            }
        }
    )
    comparison = ReferenceComparison(reference(np.random.default_rng(1)), confidence_bins=20)
    policy, unknown = policy_for(config.drift, "m", comparison)
    assert dict(policy.per_feature_thresholds) == {"n0": 0.3, "@prediction": 0.5}
    assert unknown == ["gone"]
    assert (policy.minimum_samples, policy.require_both_windows) == (500, False)


def _window(series: Series, ref: Reference, counts: dict[str, list[int]]) -> SeriesWindow:
    window = SeriesWindow(series)
    for name, values in counts.items():
        metric = (
            prediction_metric(ref.field_tag)
            if name == "@prediction"
            else feature_metric(ref.field_tag, name)
        )
        for index, value in enumerate(values):
            if value:
                window.histograms[metric][index] = value
    window.counters["events"] = max(sum(v) for v in counts.values())
    return window


def test_drift_contributor_samples_are_bounded_by_the_reference_and_transitions_reported() -> None:
    rng = np.random.default_rng(4)
    ref = reference(rng)
    references: dict[str, Reference | None] = {"m": ref, "bare": None}
    transitions: list[DriftTransition] = []
    figures = DriftFigures(
        parse_config({}).drift,
        references.get,
        confidence_bins=20,
        on_transition=transitions.append,
    )
    stable, canary = Series("v1", "stable"), Series("v2", "canary", "region=eu")
    usual = {item.name: [c * 10 for c in item.counts] for item in ref.items}
    shifted = dict(usual, c=[0, 0, 0, 0, 5_000])  # every event in category "c"

    def tick(now_ms: int, canary_counts: dict[str, list[int]] | None) -> Snapshot:
        windows = {stable: _window(stable, ref, usual)}
        if canary_counts is not None:
            windows[canary] = _window(canary, ref, canary_counts)
        snapshot = Snapshot()
        model = ModelWindows(
            "m", now_ms, {"short": windows, "long": windows}, {"short": 300, "long": 3600}
        )
        figures.contribute(model, snapshot)
        figures.contribute(
            ModelWindows("bare", now_ms, {"short": {}, "long": {}}, {"short": 300, "long": 3600}),
            snapshot,
        )
        return snapshot

    snapshot = tick(60_000, shifted)
    assert snapshot.value(names.REFERENCE_PRESENT, model="bare") == 0
    assert snapshot.value(names.REFERENCE_PRESENT, model="m") == 1
    assert snapshot.value(names.REFERENCE_AGE, model="m") == 60.0
    assert (
        snapshot.value(names.REFERENCE_INFO, model="m", reference_id=ref.reference_id, version="")
        == 1
    )
    by_metric: dict[str, int] = {}
    for sample in snapshot.samples:
        by_metric[sample.metric.name] = by_metric.get(sample.metric.name, 0) + 1
        if "feature" in sample.metric.labels:
            feature = sample.labels[sample.metric.labels.index("feature")]
            assert feature in {item.name for item in ref.items}
    items, numeric = len(ref.items), 4
    # 2 series x 2 windows; distances: psi, js, hellinger for all, ks and wasserstein for numeric.
    assert by_metric[names.DRIFT_SCORE.name] == 2 * 2 * (3 * items + 2 * numeric)
    assert (
        by_metric[names.DRIFT_P_VALUE.name] == by_metric[names.DRIFT_SAMPLES.name] == 2 * 2 * items
    )
    assert by_metric[names.DRIFTED.name] == 2 * items
    labels = {"model": "m", "version": "v2", "deployment": "canary", "segment": "region=eu"}
    assert snapshot.value(names.DRIFTED, **labels, feature="c") == 1
    assert snapshot.value(names.DRIFTED, **labels, feature="n0") == 0
    assert snapshot.value(names.DRIFT_SHARE, **labels) == pytest.approx(1 / 5)
    assert [(t.version, t.segment, t.feature, t.state) for t in transitions] == [
        ("v2", {"region": "eu"}, "c", "drifted")
    ]
    assert transitions[0].stat == "psi" and transitions[0].threshold == 0.1

    tick(65_000, shifted)
    assert len(transitions) == 1, "no change, no transition"
    tick(70_000, None)  # the canary series is gone: its drift clears
    assert [(t.feature, t.state, t.value, t.at_ms) for t in transitions[1:]] == [
        ("c", "ok", None, 70_000)
    ]
