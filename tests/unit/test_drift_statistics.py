"""Unit tests for detectors.drift_statistics, checked against scipy, numpy and the definitions."""

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import spatial, stats

from detectors.drift_statistics import (
    CHI_SQUARE_PSEUDO_COUNT,
    PSI_EPSILON,
    DriftStatistic,
    chi_square_p_value,
    compute_statistics,
    compute_statistics_by_feature,
    hellinger_distance,
    jensen_shannon_distance,
    kolmogorov_smirnov_binned,
    kolmogorov_smirnov_p_value,
    population_stability_index,
    wasserstein_normalised,
)

# Zero counts must never produce numpy warnings, so any warning fails the test.
pytestmark = pytest.mark.filterwarnings("error")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAXIMUM_BINS = 40


@st.composite
def histogram_pairs(draw: st.DrawFn, maximum_count: int = 1_000) -> tuple[IntArray, IntArray]:
    """Two histograms over the same bins; either may be empty."""
    bins = draw(st.integers(2, MAXIMUM_BINS))
    counts = arrays(np.int64, bins, elements=st.integers(0, maximum_count))
    return draw(counts), draw(counts)


@st.composite
def non_empty_histogram_pairs(draw: st.DrawFn) -> tuple[IntArray, IntArray]:
    reference, current = draw(histogram_pairs())
    assume(reference.sum() > 0 and current.sum() > 0)
    return reference, current


def increasing_bin_values(bins: int, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(size=bins)) - 3.0


def proportions(counts: npt.NDArray[Any]) -> FloatArray:
    as_float = np.asarray(counts, dtype=np.float64)
    result: FloatArray = as_float / as_float.sum()
    return result


# --- Agreement with scipy, numpy and the definitions ---------------------------------------------


@given(non_empty_histogram_pairs())
def test_psi_equals_the_direct_formula(histograms: tuple[IntArray, IntArray]) -> None:
    reference, current = histograms
    p = np.maximum(proportions(reference), PSI_EPSILON)
    q = np.maximum(proportions(current), PSI_EPSILON)
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert population_stability_index(reference, current) == pytest.approx(expected, abs=1e-12)


def test_psi_of_a_hand_computed_example() -> None:
    # p = (1/2, 1/2), q = (1/4, 3/4): (-1/4) ln(1/2) + (1/4) ln(3/2) = ln(3) / 4.
    assert population_stability_index(np.array([50, 50]), np.array([25, 75])) == pytest.approx(
        math.log(3.0) / 4.0, rel=1e-12
    )


def test_psi_epsilon_caps_the_contribution_of_an_empty_bin() -> None:
    reference, current = np.array([100, 0]), np.array([50, 50])
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-3) * math.log(0.5 / 1e-3)
    assert population_stability_index(reference, current, epsilon=1e-3) == pytest.approx(expected)


@given(non_empty_histogram_pairs())
def test_jensen_shannon_equals_scipy_base_2(histograms: tuple[IntArray, IntArray]) -> None:
    reference, current = histograms
    expected = float(spatial.distance.jensenshannon(reference, current, base=2))
    assert jensen_shannon_distance(reference, current) == pytest.approx(expected, abs=1e-9)


@given(non_empty_histogram_pairs())
def test_hellinger_equals_its_definition(histograms: tuple[IntArray, IntArray]) -> None:
    reference, current = histograms
    bhattacharyya = np.sum(np.sqrt(proportions(reference) * proportions(current)))
    expected = math.sqrt(max(0.0, 1.0 - bhattacharyya))
    assert hellinger_distance(reference, current) == pytest.approx(expected, abs=1e-7)


@given(non_empty_histogram_pairs())
def test_chi_square_equals_scipy_on_the_smoothed_reference(
    histograms: tuple[IntArray, IntArray],
) -> None:
    reference, current = histograms
    smoothed = reference + CHI_SQUARE_PSEUDO_COUNT
    expected_counts = smoothed / smoothed.sum() * current.sum()
    expected = float(stats.chisquare(f_obs=current, f_exp=expected_counts).pvalue)
    assert chi_square_p_value(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_chi_square_survives_reference_bins_that_are_empty() -> None:
    p_value = chi_square_p_value(np.array([0, 500, 500]), np.array([10, 45, 45]))
    assert 0.0 <= p_value < 1e-6


@given(non_empty_histogram_pairs(), st.integers(0, 2**32 - 1), st.floats(0.1, 10.0))
def test_wasserstein_equals_scipy_divided_by_spread(
    histograms: tuple[IntArray, IntArray], seed: int, spread: float
) -> None:
    reference, current = histograms
    bin_values = increasing_bin_values(reference.size, seed)
    expected = stats.wasserstein_distance(
        bin_values, bin_values, u_weights=reference, v_weights=current
    )
    assert wasserstein_normalised(reference, current, bin_values, spread) == pytest.approx(
        expected / spread, rel=1e-9, abs=1e-12
    )


def test_wasserstein_of_a_location_shift_is_the_shift_in_spreads() -> None:
    bin_values = np.arange(10.0)
    reference = np.array([0, 1, 2, 3, 4, 0, 0, 0, 0, 0])
    current = np.roll(reference, 2)
    assert wasserstein_normalised(reference, current, bin_values, 4.0) == pytest.approx(0.5)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-1.0, 1.0),
    scale=st.floats(0.5, 2.0),
)
def test_binned_kolmogorov_smirnov_is_within_bin_resolution_of_ks_2samp(
    seed: int, shift: float, scale: float
) -> None:
    """Binning can only lower the KS statistic, and by at most the heaviest bin.

    Bound: for x inside bin j, each CDF moves by at most that bin's proportion from its value at
    the bin's lower edge, so |D(x)| <= |D(lower edge)| + max(p_reference[j], p_current[j]),
    where D is the CDF difference. The binned statistic is |D| at the bin edges, which the raw
    statistic attains too, so 0 <= raw - binned <= max over j of max(p_reference[j], p_current[j]).
    """
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=10_000)
    current = rng.normal(loc=shift, scale=scale, size=3_000)
    inner_edges = np.quantile(reference, np.linspace(0.0, 1.0, 21)[1:-1])
    # searchsorted's default side puts x in bin j when edge[j-1] < x <= edge[j], matching the
    # "<=" in the empirical CDF that ks_2samp uses.
    reference_counts = np.bincount(np.searchsorted(inner_edges, reference), minlength=20)
    current_counts = np.bincount(np.searchsorted(inner_edges, current), minlength=20)

    binned = kolmogorov_smirnov_binned(reference_counts, current_counts)
    # The statistic does not depend on the method; "asymp" skips the slow exact p-value.
    raw = float(stats.ks_2samp(reference, current, method="asymp").statistic)
    heaviest_bin = float(
        np.max(np.maximum(proportions(reference_counts), proportions(current_counts)))
    )
    assert -1e-12 <= raw - binned <= heaviest_bin + 1e-12


@pytest.mark.parametrize(("shift", "sizes"), [(0.0, (4_000, 3_000)), (0.1, (9_000, 2_500))])
def test_kolmogorov_smirnov_p_value_matches_scipy_asymptotic(
    shift: float, sizes: tuple[int, int]
) -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(size=sizes[0])
    current = rng.normal(loc=shift, size=sizes[1])
    result = stats.ks_2samp(reference, current, method="asymp")
    p_value = kolmogorov_smirnov_p_value(float(result.statistic), *sizes)
    assert p_value == pytest.approx(float(result.pvalue), rel=1e-12)


def test_kolmogorov_smirnov_p_value_edge_cases() -> None:
    assert math.isnan(kolmogorov_smirnov_p_value(0.2, 0, 100))
    assert math.isnan(kolmogorov_smirnov_p_value(math.nan, 100, 100))
    assert kolmogorov_smirnov_p_value(0.0, 100, 100) == 1.0
    with pytest.raises(ValueError, match="statistic"):
        kolmogorov_smirnov_p_value(1.5, 100, 100)
    with pytest.raises(ValueError, match="non-negative"):
        kolmogorov_smirnov_p_value(0.1, -1, 100)


# --- Properties ----------------------------------------------------------------------------------

BOUNDED_DISTANCES = [jensen_shannon_distance, hellinger_distance, kolmogorov_smirnov_binned]
SYMMETRIC_DISTANCES = [population_stability_index, *BOUNDED_DISTANCES]


@given(non_empty_histogram_pairs())
def test_statistics_stay_in_their_ranges(histograms: tuple[IntArray, IntArray]) -> None:
    reference, current = histograms
    for distance in BOUNDED_DISTANCES:
        assert 0.0 <= distance(reference, current) <= 1.0, distance.__name__
    assert population_stability_index(reference, current) >= 0.0
    assert 0.0 <= chi_square_p_value(reference, current) <= 1.0
    bin_values = np.arange(float(reference.size))
    assert wasserstein_normalised(reference, current, bin_values, 1.0) >= 0.0


@given(histogram_pairs(), st.integers(1, 1_000))
def test_distances_vanish_for_identical_distributions(
    histograms: tuple[IntArray, IntArray], factor: int
) -> None:
    reference, _ = histograms
    assume(reference.sum() > 0)
    # Proportional counts describe the same distribution, seen with more samples.
    current = reference * factor
    for distance in SYMMETRIC_DISTANCES:
        assert distance(reference, current) == pytest.approx(0.0, abs=1e-7), distance.__name__
    bin_values = np.arange(float(reference.size))
    assert wasserstein_normalised(reference, current, bin_values, 1.0) == pytest.approx(
        0.0, abs=1e-9
    )


@given(non_empty_histogram_pairs(), st.integers(0, 2**32 - 1))
def test_distances_are_symmetric(histograms: tuple[IntArray, IntArray], seed: int) -> None:
    reference, current = histograms
    for distance in SYMMETRIC_DISTANCES:
        forward, backward = distance(reference, current), distance(current, reference)
        assert forward == pytest.approx(backward, rel=1e-9, abs=1e-12), distance.__name__
    bin_values = increasing_bin_values(reference.size, seed)
    assert wasserstein_normalised(reference, current, bin_values, 2.0) == pytest.approx(
        wasserstein_normalised(current, reference, bin_values, 2.0), rel=1e-9, abs=1e-12
    )


@given(non_empty_histogram_pairs(), st.integers(2, 50))
def test_distances_depend_on_proportions_only(
    histograms: tuple[IntArray, IntArray], factor: int
) -> None:
    reference, current = histograms
    for distance in SYMMETRIC_DISTANCES:
        assert distance(reference * factor, current * factor) == pytest.approx(
            distance(reference, current), rel=1e-9, abs=1e-9
        ), distance.__name__


def test_disjoint_distributions_are_maximally_distant() -> None:
    reference, current = np.array([10, 0, 0]), np.array([0, 0, 7])
    assert jensen_shannon_distance(reference, current) == pytest.approx(1.0)
    assert hellinger_distance(reference, current) == pytest.approx(1.0)
    assert kolmogorov_smirnov_binned(reference, current) == pytest.approx(1.0)


@given(histogram_pairs())
def test_an_empty_histogram_gives_nan_everywhere(histograms: tuple[IntArray, IntArray]) -> None:
    reference, current = histograms
    bin_values = np.arange(float(reference.size))
    for empty_reference, empty_current in [
        (reference, np.zeros_like(current)),
        (np.zeros_like(reference), current),
    ]:
        statistics = compute_statistics(
            empty_reference,
            empty_current,
            ordered=True,
            bin_values=bin_values,
            reference_spread=1.0,
        )
        assert set(statistics) == set(DriftStatistic)
        assert all(math.isnan(value) for value in statistics.values()), statistics


def test_float_counts_are_accepted() -> None:
    decayed = np.array([10.5, 3.25, 0.0, 7.0])
    assert population_stability_index(decayed, decayed) == 0.0


def test_zero_spread_gives_nan_wasserstein() -> None:
    counts = np.array([1, 2, 3])
    assert math.isnan(wasserstein_normalised(counts, counts, np.arange(3.0), 0.0))


# --- Batched evaluation and compute_statistics ---------------------------------------------------


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(2, 25))
def test_batched_statistics_equal_the_per_feature_ones(seed: int, features: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 50, size=(features, bins))
    current = rng.integers(0, 50, size=(features, bins))
    current[0] = 0  # an empty window among non-empty ones
    bin_values = np.stack([increasing_bin_values(bins, seed + row) for row in range(features)])
    spreads = rng.uniform(0.5, 2.0, size=features)

    batched = compute_statistics_by_feature(
        reference, current, ordered=True, bin_values=bin_values, reference_spreads=spreads
    )
    for row in range(features):
        single = compute_statistics(
            reference[row],
            current[row],
            ordered=True,
            bin_values=bin_values[row],
            reference_spread=float(spreads[row]),
        )
        for statistic, value in single.items():
            np.testing.assert_allclose(batched[statistic][row], value, rtol=1e-12, atol=0.0)


def test_unordered_bins_skip_order_dependent_statistics() -> None:
    statistics = compute_statistics(
        np.array([5, 3, 2]),
        np.array([1, 1, 1]),
        ordered=False,
        bin_values=None,
        reference_spread=None,
    )
    assert set(statistics) == {
        DriftStatistic.PSI,
        DriftStatistic.JENSEN_SHANNON,
        DriftStatistic.HELLINGER,
        DriftStatistic.CHI_SQUARE_P_VALUE,
    }


def test_compute_statistics_matches_the_individual_functions() -> None:
    reference, current = np.array([30, 50, 20, 0]), np.array([10, 20, 30, 5])
    bin_values = np.array([-1.0, 0.0, 1.0, 2.0])
    statistics = compute_statistics(
        reference, current, ordered=True, bin_values=bin_values, reference_spread=0.8
    )
    assert statistics == {
        DriftStatistic.PSI: population_stability_index(reference, current),
        DriftStatistic.JENSEN_SHANNON: jensen_shannon_distance(reference, current),
        DriftStatistic.HELLINGER: hellinger_distance(reference, current),
        DriftStatistic.CHI_SQUARE_P_VALUE: chi_square_p_value(reference, current),
        DriftStatistic.KOLMOGOROV_SMIRNOV: kolmogorov_smirnov_binned(reference, current),
        DriftStatistic.WASSERSTEIN: wasserstein_normalised(reference, current, bin_values, 0.8),
    }


# --- Contract violations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        (np.array([1, 2, 3]), np.array([1, 2]), "same bins"),
        (np.array([1, -2, 3]), np.array([1, 2, 3]), "reference_counts must hold finite"),
        (np.array([1, 2, 3]), np.array([1.0, np.nan, 3.0]), "current_counts must hold finite"),
        (np.array([[1, 2, 3]]), np.array([[1, 2, 3]]), "must be 1-D"),
        (np.array([4]), np.array([4]), "at least 2 bins"),
    ],
)
def test_malformed_histograms_raise(
    reference: npt.NDArray[Any], current: npt.NDArray[Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        population_stability_index(reference, current)


def test_ordered_bins_need_bin_values_and_spread() -> None:
    counts = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="ordered bins need"):
        compute_statistics(counts, counts, ordered=True, bin_values=None, reference_spread=1.0)
    with pytest.raises(ValueError, match="unordered bins take neither"):
        compute_statistics(
            counts, counts, ordered=False, bin_values=np.arange(3.0), reference_spread=None
        )


def test_bin_values_must_be_non_decreasing_and_spread_non_negative() -> None:
    counts = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="non-decreasing"):
        wasserstein_normalised(counts, counts, np.array([0.0, 2.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="one value per bin"):
        wasserstein_normalised(counts, counts, np.arange(4.0), 1.0)
    with pytest.raises(ValueError, match="spreads"):
        wasserstein_normalised(counts, counts, np.arange(3.0), -1.0)


def test_parameters_are_validated() -> None:
    counts = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="epsilon"):
        population_stability_index(counts, counts, epsilon=0.0)
    with pytest.raises(ValueError, match="pseudo_count"):
        chi_square_p_value(counts, counts, pseudo_count=0.0)
