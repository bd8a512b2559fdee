"""Unit tests for detectors.drift_decision: FDR control, policy validation and drift decisions."""

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors.drift_decision import DriftPolicy, benjamini_hochberg, decide
from detectors.drift_statistics import DriftStatistic, compute_statistics_by_feature

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

P_VALUE = DriftStatistic.CHI_SQUARE_P_VALUE
PSI = DriftStatistic.PSI

FEATURES = 20
BINS = 20
REFERENCE_SAMPLES = 50_000
WINDOW_SAMPLES = 5_000
LONG_WINDOW_SHORT_WINDOWS = 5
"""The simulated long window pools this many consecutive short windows (25,000 samples)."""


# --- Benjamini-Hochberg ---------------------------------------------------------------------------


def test_benjamini_hochberg_on_a_hand_checked_example() -> None:
    # m = 5 at q = 0.05: the step-up thresholds k * q / m are 0.01, 0.02, 0.03, 0.04, 0.05.
    # Sorted p-values 0.005, 0.011, 0.035, 0.039, 0.2: the largest k with p(k) <= k * q / m is 4
    # (0.039 <= 0.04), so the four smallest are rejected, including 0.035 which misses its own
    # threshold 0.03; that is the step-up part of the procedure.
    p_values = np.array([0.039, 0.2, 0.005, 0.035, 0.011])
    rejected = benjamini_hochberg(p_values, false_discovery_rate=0.05)
    assert rejected.tolist() == [True, False, True, True, True]


def test_benjamini_hochberg_rejects_nothing_when_no_step_passes() -> None:
    # m = 3 at q = 0.05: thresholds 0.0167, 0.0333, 0.05; 0.02, 0.04 and 0.06 each miss theirs.
    rejected = benjamini_hochberg(np.array([0.06, 0.02, 0.04]), false_discovery_rate=0.05)
    assert rejected.tolist() == [False, False, False]


def test_benjamini_hochberg_never_rejects_nan_and_leaves_it_out_of_the_family() -> None:
    # With the two finite p-values as the family, 0.03 <= 2 * 0.05 / 2 is rejected. Counting the
    # eight nan entries as hypotheses (m = 10) would give 0.03 > 2 * 0.05 / 10.
    p_values = np.array([0.004, 0.03, *[math.nan] * 8])
    rejected = benjamini_hochberg(p_values, false_discovery_rate=0.05)
    assert rejected.tolist() == [True, True, *[False] * 8]


def test_benjamini_hochberg_handles_empty_and_all_nan_input() -> None:
    assert benjamini_hochberg(np.array([]), 0.05).tolist() == []
    assert benjamini_hochberg(np.array([math.nan, math.nan]), 0.05).tolist() == [False, False]


@pytest.mark.parametrize(
    ("p_values", "rate", "message"),
    [
        (np.array([0.1, 1.2]), 0.05, r"\[0, 1\]"),
        (np.array([0.1, -0.1]), 0.05, r"\[0, 1\]"),
        (np.array([[0.1]]), 0.05, "1-D"),
        (np.array([0.1]), 0.0, "false_discovery_rate"),
        (np.array([0.1]), 1.0, "false_discovery_rate"),
    ],
)
def test_benjamini_hochberg_rejects_bad_input(
    p_values: FloatArray, rate: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        benjamini_hochberg(p_values, rate)


@settings(deadline=None)  # the first example pays for importing statsmodels
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 200),
    rate=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.25]),
)
def test_benjamini_hochberg_agrees_with_statsmodels(seed: int, size: int, rate: float) -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(seed)
    # A mix of null (uniform) and strongly non-null p-values, so both outcomes occur.
    p_values = np.where(rng.random(size) < 0.3, rng.beta(0.1, 10.0, size=size), rng.random(size))
    expected = multitest.multipletests(p_values, alpha=rate, method="fdr_bh")[0]
    np.testing.assert_array_equal(benjamini_hochberg(p_values, rate), expected)


# --- DriftPolicy ----------------------------------------------------------------------------------


def test_default_policy() -> None:
    policy = DriftPolicy()
    assert policy.statistic is P_VALUE
    assert policy.threshold is None
    assert policy.effect_size_statistic is PSI
    assert policy.effect_size_threshold == 0.1
    assert policy.minimum_samples == 500
    assert policy.false_discovery_rate == 0.01
    assert policy.require_both_windows is True
    assert dict(policy.per_feature_thresholds) == {}
    assert policy.deciding_statistics == (P_VALUE, PSI)
    assert policy.distance_statistic is PSI
    assert policy.distance_threshold == 0.1


def test_policy_accepts_statistic_names_from_configuration() -> None:
    policy = DriftPolicy(statistic="jensen_shannon", threshold=0.2, effect_size_statistic=None)  # type: ignore[arg-type]
    assert policy.statistic is DriftStatistic.JENSEN_SHANNON
    assert policy.deciding_statistics == (DriftStatistic.JENSEN_SHANNON,)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"statistic": "entropy"}, "statistic must be one of .*'entropy'"),
        ({"threshold": 0.05}, "threshold must be None .* got 0.05"),
        ({"statistic": PSI, "effect_size_statistic": None}, "threshold is required"),
        ({"statistic": PSI, "threshold": 0.1}, "effect_size_statistic must be None"),
        (
            {
                "statistic": DriftStatistic.HELLINGER,
                "threshold": 1.5,
                "effect_size_statistic": None,
            },
            r"threshold for hellinger must be in \(0, 1\], got 1.5",
        ),
        (
            {"statistic": PSI, "threshold": -0.1, "effect_size_statistic": None},
            "threshold for psi must be finite and > 0, got -0.1",
        ),
        ({"effect_size_statistic": P_VALUE}, "effect_size_statistic must be a distance"),
        ({"effect_size_threshold": math.inf}, "effect_size_threshold .* got inf"),
        ({"effect_size_threshold": 0.0}, "effect_size_threshold .* got 0.0"),
        ({"minimum_samples": 0}, "minimum_samples must be an int >= 1, got 0"),
        ({"minimum_samples": 500.0}, "minimum_samples .* got 500.0"),
        ({"minimum_samples": True}, "minimum_samples .* got True"),
        ({"false_discovery_rate": 0.0}, r"false_discovery_rate must be in \(0, 1\), got 0.0"),
        ({"false_discovery_rate": 1.0}, "false_discovery_rate .* got 1.0"),
        ({"require_both_windows": 1}, "require_both_windows must be a bool, got 1"),
        ({"per_feature_thresholds": {"age": -1.0}}, r"per_feature_thresholds\['age'\] .* -1.0"),
        ({"per_feature_thresholds": {"": 0.2}}, "per_feature_thresholds keys .* ''"),
        (
            {"effect_size_statistic": None, "per_feature_thresholds": {"age": 0.2}},
            "per_feature_thresholds needs a distance threshold",
        ),
    ],
)
def test_policy_validation_names_the_field_and_value(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DriftPolicy(**arguments)


def test_policy_is_frozen_and_keeps_its_own_copy_of_the_overrides() -> None:
    overrides = {"age": 0.2}
    policy = DriftPolicy(per_feature_thresholds=overrides)
    overrides["age"] = 5.0
    assert policy.per_feature_thresholds["age"] == 0.2
    with pytest.raises(TypeError):
        policy.per_feature_thresholds["age"] = 0.3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.minimum_samples = 10  # type: ignore[misc]
    assert policy == DriftPolicy(per_feature_thresholds={"age": 0.2}) != DriftPolicy()
    assert hash(policy) == hash(DriftPolicy(per_feature_thresholds={"age": 0.2}))


# --- decide on hand-made statistics ---------------------------------------------------------------

NAMES = ["age", "income", "tenure"]


def window(p_values: list[float], psi: list[float]) -> dict[DriftStatistic, FloatArray]:
    return {P_VALUE: np.array(p_values), PSI: np.array(psi)}


def samples(*counts: int) -> IntArray:
    return np.array(counts, dtype=np.int64)


def test_significant_and_large_difference_in_both_windows_drifts() -> None:
    statistics = window([1e-9, 1e-9, 0.5], [0.3, 0.05, 0.3])
    decision = decide(
        DriftPolicy(),
        NAMES,
        statistics,
        statistics,
        samples(1000, 1000, 1000),
        samples(1000, 1000, 1000),
    )
    # income is significant but below the PSI floor; tenure is large but not significant.
    assert decision.drifted.tolist() == [True, False, False]
    assert decision.drifted_features == ("age",)
    assert decision.nodata.tolist() == [False, False, False]
    assert decision.drift_share == pytest.approx(1 / 3)


def test_too_few_samples_is_nodata_never_drifted() -> None:
    statistics = window([0.0, 0.0, 0.0], [5.0, 5.0, 5.0])
    decision = decide(
        DriftPolicy(minimum_samples=500),
        NAMES,
        statistics,
        statistics,
        samples(499, 500, 10_000),
        samples(10_000, 499, 10_000),
    )
    assert decision.nodata.tolist() == [True, True, False]
    assert decision.drifted.tolist() == [False, False, True]
    assert decision.drift_share == 1.0


def test_require_both_windows_is_honoured() -> None:
    drifting = window([1e-9, 1e-9, 1e-9], [0.5, 0.5, 0.5])
    quiet = window([0.6, 0.6, 0.6], [0.01, 0.01, 0.01])
    enough = samples(1000, 1000, 1000)

    both = decide(DriftPolicy(), NAMES, drifting, quiet, enough, enough)
    assert both.drifted.tolist() == [False, False, False]
    assert both.drift_share == 0.0

    either = DriftPolicy(require_both_windows=False)
    assert decide(either, NAMES, drifting, quiet, enough, enough).drifted.all()
    assert decide(either, NAMES, quiet, drifting, enough, enough).drifted.all()


def test_nodata_depends_on_require_both_windows() -> None:
    statistics = window([1e-9, 1e-9, 1e-9], [0.5, 0.5, 0.5])
    short, long = samples(10, 1000, 10), samples(1000, 10, 10)

    both = decide(DriftPolicy(), NAMES, statistics, statistics, short, long)
    assert both.nodata.tolist() == [True, True, True]
    assert both.drifted.tolist() == [False, False, False]
    assert math.isnan(both.drift_share)

    either = decide(
        DriftPolicy(require_both_windows=False), NAMES, statistics, statistics, short, long
    )
    # The window with enough samples decides on its own.
    assert either.nodata.tolist() == [False, False, True]
    assert either.drifted.tolist() == [True, True, False]
    assert either.drift_share == 1.0


def test_nan_statistics_never_drift() -> None:
    statistics = window([math.nan, 1e-9, 1e-9], [0.5, math.nan, 0.5])
    enough = samples(1000, 1000, 1000)
    decision = decide(DriftPolicy(), NAMES, statistics, statistics, enough, enough)
    assert decision.drifted.tolist() == [False, False, True]


def test_features_without_data_leave_the_false_discovery_family() -> None:
    # Two tested features plus eight with too few samples (whose p-values are meaningless).
    names = [f"feature_{index}" for index in range(10)]
    statistics = window([0.004, 0.008, *[0.9] * 8], [0.5] * 10)
    counts = samples(1000, 1000, *[10] * 8)
    decision = decide(DriftPolicy(), names, statistics, statistics, counts, counts)
    # Family of 2: 0.008 <= 2 * 0.01 / 2. A family of 10 would reject neither (0.004 > 0.001).
    assert decision.drifted_features == ("feature_0", "feature_1")


def test_distance_statistic_policy_uses_its_threshold_and_overrides() -> None:
    policy = DriftPolicy(
        statistic=DriftStatistic.JENSEN_SHANNON,
        threshold=0.1,
        effect_size_statistic=None,
        per_feature_thresholds={"income": 0.3},
    )
    statistics = {DriftStatistic.JENSEN_SHANNON: np.array([0.1, 0.2, 0.09])}
    enough = samples(1000, 1000, 1000)
    decision = decide(policy, NAMES, statistics, statistics, enough, enough)
    assert decision.drifted.tolist() == [True, False, False]


def test_per_feature_thresholds_replace_the_effect_size_floor() -> None:
    policy = DriftPolicy(per_feature_thresholds={"age": 0.5, "tenure": 0.01})
    statistics = window([1e-9, 1e-9, 1e-9], [0.3, 0.3, 0.02])
    enough = samples(1000, 1000, 1000)
    decision = decide(policy, NAMES, statistics, statistics, enough, enough)
    assert decision.drifted.tolist() == [False, True, True]


def test_decision_reports_the_deciding_statistics_read_only() -> None:
    statistics = {
        **window([0.2, 1e-9, 0.5], [0.01, 0.4, 0.02]),
        DriftStatistic.HELLINGER: np.zeros(3),
    }
    enough = samples(1000, 1000, 1000)
    decision = decide(DriftPolicy(), NAMES, statistics, statistics, enough, enough)
    assert set(decision.statistics_short) == {P_VALUE, PSI}
    np.testing.assert_array_equal(decision.statistics_long[PSI], [0.01, 0.4, 0.02])
    with pytest.raises(ValueError, match="read-only"):
        decision.drifted[0] = True
    with pytest.raises(ValueError, match="read-only"):
        decision.statistics_short[PSI][0] = 1.0


@pytest.mark.parametrize(
    ("names", "statistics", "counts", "message"),
    [
        (["age", "age", "tenure"], window([0.1] * 3, [0.1] * 3), samples(1, 1, 1), "unique"),
        (NAMES, {P_VALUE: np.zeros(3)}, samples(1, 1, 1), "statistics_short lacks psi"),
        (NAMES, window([0.1] * 2, [0.1] * 2), samples(1, 1, 1), r"statistics_short\[.*shape"),
        (NAMES, window([0.1] * 3, [0.1] * 3), samples(1, 1), "samples_short must have shape"),
        (NAMES, window([0.1] * 3, [0.1] * 3), samples(1, -1, 1), "non-negative"),
    ],
)
def test_decide_rejects_malformed_input(
    names: list[str],
    statistics: dict[DriftStatistic, FloatArray],
    counts: IntArray,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        decide(DriftPolicy(), names, statistics, statistics, counts, counts)


def test_decide_rejects_overrides_for_unknown_features() -> None:
    statistics = window([0.1] * 3, [0.1] * 3)
    policy = DriftPolicy(per_feature_thresholds={"agee": 0.2})
    with pytest.raises(ValueError, match="unknown features: \\['agee'\\]"):
        decide(policy, NAMES, statistics, statistics, samples(1, 1, 1), samples(1, 1, 1))


# --- Simulated streams ----------------------------------------------------------------------------


def quantile_edges(reference: FloatArray) -> FloatArray:
    """Inner edges, shape (features, BINS - 1), of equal-mass bins of each reference row."""
    edges: FloatArray = np.quantile(reference, np.linspace(0.0, 1.0, BINS + 1)[1:-1], axis=1).T
    return edges


def histograms(samples_by_feature: FloatArray, inner_edges: FloatArray) -> IntArray:
    """Bin counts, shape (features, BINS), of each row of samples on its feature's edges."""
    return np.stack(
        [
            np.bincount(np.searchsorted(edges, row), minlength=BINS)
            for edges, row in zip(inner_edges, samples_by_feature, strict=True)
        ]
    )


def unordered_statistics(
    reference_counts: IntArray, current_counts: npt.NDArray[Any]
) -> dict[DriftStatistic, FloatArray]:
    return compute_statistics_by_feature(
        reference_counts, current_counts, ordered=False, bin_values=None, reference_spreads=None
    )


def test_stationary_stream_raises_no_false_alarms_with_the_default_policy() -> None:
    """1,000 ticks x 20 features from the reference distribution: at most 2 false alarms.

    The bound is loose on purpose. The PSI floor makes a false alarm all but impossible: over 20
    bins the stationary PSI of a 5,000-sample window is about 19 / 5,000 ≈ 0.004 with a spread of
    about 0.001, far below 0.1. The measured count with this seed is 0 (largest short-window PSI
    ≈ 0.012). Without the floor the same stream raises 18 false alarms when both windows must
    agree, because the chi-square test treats the reference proportions as exact (see
    chi_square_p_value) and so rejects too often for windows this size against 50,000 reference
    samples.

    A window's bin counts are drawn from the multinomial distribution with the true bin
    probabilities, which is exactly the distribution of binning 5,000 fresh draws and avoids
    drawing 100 million normal numbers.
    """
    rng = np.random.default_rng(2024)
    ticks = 1_000
    reference = rng.normal(size=(FEATURES, REFERENCE_SAMPLES))
    inner_edges = quantile_edges(reference)
    reference_counts = histograms(reference, inner_edges)
    all_edges = np.pad(inner_edges, ((0, 0), (1, 1)), constant_values=(-np.inf, np.inf))
    bin_probabilities = np.diff(stats.norm.cdf(all_edges), axis=1)

    # Each tick's long window pools that tick's short window and the four before it.
    warm_up = LONG_WINDOW_SHORT_WINDOWS - 1
    short = np.stack(
        [rng.multinomial(WINDOW_SAMPLES, p, size=ticks + warm_up) for p in bin_probabilities],
        axis=1,
    )
    running = np.concatenate([np.zeros_like(short[:1]), np.cumsum(short, axis=0)])
    long = running[LONG_WINDOW_SHORT_WINDOWS:] - running[:-LONG_WINDOW_SHORT_WINDOWS]
    short = short[warm_up:]

    # Score every (tick, feature) pair in one batched call, then decide tick by tick.
    repeated_reference = np.tile(reference_counts, (ticks, 1))
    statistics_short = unordered_statistics(repeated_reference, short.reshape(-1, BINS))
    statistics_long = unordered_statistics(repeated_reference, long.reshape(-1, BINS))
    names = [f"feature_{index}" for index in range(FEATURES)]
    policy = DriftPolicy()
    false_alarms = 0
    for tick in range(ticks):
        rows = slice(tick * FEATURES, (tick + 1) * FEATURES)
        decision = decide(
            policy,
            names,
            {statistic: values[rows] for statistic, values in statistics_short.items()},
            {statistic: values[rows] for statistic, values in statistics_long.items()},
            short[tick].sum(axis=1),
            long[tick].sum(axis=1),
        )
        assert not decision.nodata.any()
        false_alarms += int(decision.drifted.sum())

    assert false_alarms <= 2
    assert float(np.max(statistics_short[PSI])) < policy.effect_size_threshold / 4


def test_half_sigma_shift_in_three_features_is_detected_for_exactly_those() -> None:
    """Ten independent ticks, each with raw samples binned like production would bin them."""
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(FEATURES, REFERENCE_SAMPLES))
    inner_edges = quantile_edges(reference)
    reference_counts = histograms(reference, inner_edges)
    bin_indices = np.stack(
        [np.searchsorted(edges, row) for edges, row in zip(inner_edges, reference, strict=True)]
    )
    bin_values = np.stack(
        [
            np.bincount(indices, weights=row, minlength=BINS) / counts
            for indices, row, counts in zip(bin_indices, reference, reference_counts, strict=True)
        ]
    )
    spreads = reference.std(axis=1)
    shifted = np.array([2, 9, 17])
    shift = np.zeros((FEATURES, 1))
    shift[shifted] = 0.5
    names = [f"feature_{index}" for index in range(FEATURES)]

    def statistics(window_samples: int) -> tuple[dict[DriftStatistic, FloatArray], IntArray]:
        current = histograms(rng.normal(size=(FEATURES, window_samples)) + shift, inner_edges)
        by_feature = compute_statistics_by_feature(
            reference_counts,
            current,
            ordered=True,
            bin_values=bin_values,
            reference_spreads=spreads,
        )
        return by_feature, current.sum(axis=1)

    for _ in range(10):
        # The shift has persisted for a whole long window (five short windows).
        statistics_short, samples_short = statistics(WINDOW_SAMPLES)
        statistics_long, samples_long = statistics(WINDOW_SAMPLES * LONG_WINDOW_SHORT_WINDOWS)
        decision = decide(
            DriftPolicy(), names, statistics_short, statistics_long, samples_short, samples_long
        )
        assert decision.drifted_features == tuple(names[index] for index in shifted)
        assert decision.drift_share == pytest.approx(3 / 20)


def test_tiny_shift_in_huge_windows_is_significant_but_not_drift() -> None:
    """Why the default policy has an effect-size floor: a 0.05 sigma shift seen in 200,000-sample
    windows is overwhelmingly significant, yet its PSI (about 0.0025) is far below 0.1."""
    rng = np.random.default_rng(5)
    all_edges = stats.norm.ppf(np.linspace(0.0, 1.0, BINS + 1))
    reference_counts = rng.multinomial(1_000_000, np.full(BINS, 1 / BINS), size=FEATURES)
    shifted_probabilities = np.diff(stats.norm.cdf(all_edges - 0.05))
    current = rng.multinomial(200_000, shifted_probabilities, size=FEATURES)
    statistics = unordered_statistics(reference_counts, current)
    counts = current.sum(axis=1)
    names = [f"feature_{index}" for index in range(FEATURES)]

    assert benjamini_hochberg(statistics[P_VALUE], 0.01).all()
    p_value_only = DriftPolicy(effect_size_statistic=None)
    assert decide(p_value_only, names, statistics, statistics, counts, counts).drifted.all()
    assert not decide(DriftPolicy(), names, statistics, statistics, counts, counts).drifted.any()
