"""Drift statistics between a reference histogram and a current-window histogram.

Both histograms count samples over the *same* bins: bin ``i`` of the reference and bin ``i`` of
the current window cover the same values (a numeric range or a category). Every statistic here
compares the two distributions through those counts only, so it can be evaluated from the binned
sliding windows without touching raw events.

Contract shared by every statistic that takes counts:

* ``reference_counts`` and ``current_counts`` are 1-D arrays of equal length (at least two bins)
  holding finite, non-negative counts. Counts may be floats, e.g. exponentially decayed counts.
* If either histogram is empty (its total is 0) the result is ``nan``; the caller reads ``nan`` as
  "not enough samples". Zero counts never raise and never emit numpy warnings.
* Shape, sign or finiteness violations raise ``ValueError``: they are bugs upstream, not data.

`compute_statistics` evaluates every applicable statistic for one feature;
`compute_statistics_by_feature` does the same for many features at once (rows are features,
columns are bins), because the evaluator scores every feature on every tick and a Python loop
over features would dominate the tick.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> reference = rng.normal(size=20_000)
>>> edges = np.quantile(reference, np.linspace(0.0, 1.0, 11)[1:-1])
>>> reference_bins = np.searchsorted(edges, reference)
>>> reference_counts = np.bincount(reference_bins, minlength=10)
>>> bin_values = np.bincount(reference_bins, weights=reference) / reference_counts
>>> current = rng.normal(loc=0.5, size=5_000)
>>> current_counts = np.bincount(np.searchsorted(edges, current), minlength=10)
>>> statistics = compute_statistics(
...     reference_counts,
...     current_counts,
...     ordered=True,
...     bin_values=bin_values,
...     reference_spread=float(reference.std()),
... )
>>> for statistic, value in statistics.items():
...     print(f"{statistic}: {value:.3f}")
psi: 0.242
jensen_shannon: 0.207
hellinger: 0.173
chi_square_p_value: 0.000
kolmogorov_smirnov: 0.204
wasserstein: 0.475
"""

import enum
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import special, stats

__all__ = [
    "CHI_SQUARE_PSEUDO_COUNT",
    "PSI_EPSILON",
    "DriftStatistic",
    "FloatArray",
    "NumericArray",
    "chi_square_p_value",
    "compute_statistics",
    "compute_statistics_by_feature",
    "hellinger_distance",
    "jensen_shannon_distance",
    "kolmogorov_smirnov_binned",
    "kolmogorov_smirnov_p_value",
    "population_stability_index",
    "wasserstein_normalised",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
NumericArray: TypeAlias = npt.NDArray[np.integer[Any]] | npt.NDArray[np.floating[Any]]

PSI_EPSILON: Final = 1e-4
"""Floor applied to bin proportions before the PSI log ratio (see `population_stability_index`)."""

CHI_SQUARE_PSEUDO_COUNT: Final = 0.5
"""Pseudo-count added to every reference bin before the chi-square test (Jeffreys prior)."""


class DriftStatistic(enum.StrEnum):
    """Names of the drift statistics; the string values are stable metric label values."""

    PSI = "psi"
    JENSEN_SHANNON = "jensen_shannon"
    HELLINGER = "hellinger"
    CHI_SQUARE_P_VALUE = "chi_square_p_value"
    KOLMOGOROV_SMIRNOV = "kolmogorov_smirnov"
    WASSERSTEIN = "wasserstein"

    @property
    def is_p_value(self) -> bool:
        """True when small values mean drift (a p-value); False for distances."""
        return self is DriftStatistic.CHI_SQUARE_P_VALUE


def population_stability_index(
    reference_counts: NumericArray,
    current_counts: NumericArray,
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` over bins.

    ``p`` and ``q`` are the reference and current bin proportions. Any proportion below
    ``epsilon`` is raised to ``epsilon`` first, so a bin that is empty on one side adds a large but
    finite term (about ``q * ln(q / epsilon)``, at most ``ln(1 / epsilon)`` ≈ 9.2 for the default)
    instead of infinity. The floored proportions are deliberately not renormalised, as in the
    usual PSI practice; the surplus mass is at most ``bins * epsilon``. The default 1e-4 sits far
    below the 1/bins mass of a sensible binning (0.05 for 20 bins), so it only changes bins that
    are empty or nearly so. PSI values computed with different ``epsilon`` are not comparable when
    a bin is empty on exactly one side.

    PSI is symmetric and non-negative, unbounded above. Rule of thumb: below 0.1 stable, 0.1 to
    0.25 moderate shift, above 0.25 major shift. Returns ``nan`` if either histogram is empty.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    return _first(_psi_rows(reference, current, epsilon))


def jensen_shannon_distance(reference_counts: NumericArray, current_counts: NumericArray) -> float:
    """Jensen-Shannon distance in base 2, in [0, 1].

    The square root of the Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2`` with
    ``m = (p + q) / 2``, measured in bits. Equal to
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``. Symmetric, a metric, and well defined
    for empty bins (``0 * log 0 = 0``), so no smoothing is needed. Returns ``nan`` if either
    histogram is empty.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    return _first(_jensen_shannon_rows(reference, current))


def hellinger_distance(reference_counts: NumericArray, current_counts: NumericArray) -> float:
    """Hellinger distance ``sqrt(sum((sqrt(p) - sqrt(q)) ** 2) / 2)``, in [0, 1].

    0 for identical distributions, 1 for distributions with disjoint support. Symmetric and a
    metric. Returns ``nan`` if either histogram is empty.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    return _first(_hellinger_rows(reference, current))


def chi_square_p_value(
    reference_counts: NumericArray,
    current_counts: NumericArray,
    pseudo_count: float = CHI_SQUARE_PSEUDO_COUNT,
) -> float:
    """P-value of Pearson's chi-square goodness of fit of the current counts to the reference.

    The expected counts are the reference proportions times the current total, and the p-value is
    ``scipy.stats.chisquare(f_obs=current_counts, f_exp=expected).pvalue`` with ``bins - 1``
    degrees of freedom.

    Reference bins with zero count would give zero expected counts and an infinite statistic as
    soon as a single current sample lands there, so ``pseudo_count`` (default 0.5, the Jeffreys
    prior) is added to *every* reference bin before taking proportions: expected
    ``= (reference + pseudo_count) / (reference_total + bins * pseudo_count) * current_total``.
    With a large reference this changes the populated bins negligibly.

    The reference proportions are treated as exact, which is accurate when the reference is much
    larger than the window. Otherwise the reference's own sampling noise inflates the statistic by
    roughly ``1 + current_total / reference_total`` and the p-values come out too small; a policy
    should therefore pair this p-value with an effect-size floor (see ``drift_decision``).

    Returns ``nan`` if either histogram is empty.
    """
    if not (np.isfinite(pseudo_count) and pseudo_count > 0.0):
        raise ValueError(f"pseudo_count must be a finite positive number, got {pseudo_count!r}")
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    return _first(_chi_square_p_value_rows(reference, current, pseudo_count))


def kolmogorov_smirnov_binned(
    reference_counts: NumericArray, current_counts: NumericArray
) -> float:
    """Kolmogorov-Smirnov statistic ``max |CDF_reference - CDF_current|`` over bin boundaries.

    Only meaningful when the bins are ordered numeric ranges listed in increasing order. The two
    CDFs are evaluated at the upper boundary of each bin, so the result never exceeds the
    two-sample KS statistic of the raw samples, and falls short of it by at most the largest
    single-bin proportion of either histogram (the CDFs can only move that much inside a bin).
    In [0, 1]; symmetric. Returns ``nan`` if either histogram is empty.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    return _first(_kolmogorov_smirnov_rows(reference, current))


def kolmogorov_smirnov_p_value(statistic: float, n_reference: int, n_current: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic.

    Uses the one-sample Kolmogorov distribution ``scipy.stats.kstwo`` at the effective sample size
    ``n * m / (n + m)`` rounded to an integer (at least 1), which is what
    ``scipy.stats.ks_2samp(..., method="asymp")`` does. Applied to `kolmogorov_smirnov_binned`
    the p-value is conservative, because binning can only lower the statistic.

    Returns ``nan`` if the statistic is ``nan`` or either sample size is 0. Raises ``ValueError``
    for a statistic outside [0, 1] or a negative sample size.
    """
    if n_reference < 0 or n_current < 0:
        raise ValueError(
            f"sample sizes must be non-negative, got n_reference={n_reference!r}, "
            f"n_current={n_current!r}"
        )
    if np.isnan(statistic) or n_reference == 0 or n_current == 0:
        return float("nan")
    if not 0.0 <= statistic <= 1.0:
        raise ValueError(f"statistic must be in [0, 1], got {statistic!r}")
    effective_size = n_reference * n_current / (n_reference + n_current)
    return float(stats.kstwo.sf(statistic, max(1.0, np.round(effective_size))))


def wasserstein_normalised(
    reference_counts: NumericArray,
    current_counts: NumericArray,
    bin_values: NumericArray,
    reference_spread: float,
) -> float:
    """First Wasserstein (earth mover's) distance divided by the reference spread.

    Each bin is represented by one value from ``bin_values`` (for instance the mean of the
    reference samples that fell into it), which must be finite and non-decreasing along the bins.
    The distance equals ``scipy.stats.wasserstein_distance(bin_values, bin_values,
    u_weights=reference_counts, v_weights=current_counts)``.

    ``reference_spread`` is the *standard deviation* of the raw reference sample, so the result
    reads as "how many reference standard deviations the mass moved"; a pure location shift of
    ``d`` standard deviations scores about ``d``. Only meaningful for ordered numeric bins.

    Non-negative and symmetric in the two histograms. Returns ``nan`` if either histogram is empty
    or ``reference_spread`` is 0 (a constant reference has no scale to normalise by). A negative
    or non-finite spread raises ``ValueError``.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    values = _validated_bin_values(bin_values, _shape(reference), dimensions=1)
    spread = _validated_spreads(np.asarray([reference_spread], dtype=np.float64), rows=1)
    return _first(_wasserstein_rows(reference, current, values, spread))


def compute_statistics(
    reference_counts: NumericArray,
    current_counts: NumericArray,
    *,
    ordered: bool,
    bin_values: NumericArray | None,
    reference_spread: float | None,
) -> dict[DriftStatistic, float]:
    """Every applicable drift statistic for one feature, with default parameters.

    For ordered numeric bins (``ordered=True``) ``bin_values`` and ``reference_spread`` are
    required (see `wasserstein_normalised`) and all six statistics are returned. For unordered
    (categorical) bins both must be ``None`` and the Kolmogorov-Smirnov and Wasserstein entries,
    which depend on the bin order, are left out. Empty histograms give ``nan`` values.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=1)
    by_feature = _statistics_rows(
        reference,
        current,
        ordered=ordered,
        bin_values=bin_values,
        reference_spreads=None if reference_spread is None else np.asarray([reference_spread]),
        dimensions=1,
    )
    return {statistic: _first(values) for statistic, values in by_feature.items()}


def compute_statistics_by_feature(
    reference_counts: NumericArray,
    current_counts: NumericArray,
    *,
    ordered: bool,
    bin_values: NumericArray | None,
    reference_spreads: NumericArray | None,
) -> dict[DriftStatistic, FloatArray]:
    """`compute_statistics` for many features at once, one feature per row.

    ``reference_counts`` and ``current_counts`` have shape ``(features, bins)``; for ordered bins
    ``bin_values`` has the same shape and ``reference_spreads`` has shape ``(features,)``. Every
    returned array has shape ``(features,)`` and row ``i`` equals `compute_statistics` on row
    ``i``. Features with different bin counts or orderedness go in separate calls.
    """
    reference, current = _validated_histograms(reference_counts, current_counts, dimensions=2)
    return _statistics_rows(
        reference,
        current,
        ordered=ordered,
        bin_values=bin_values,
        reference_spreads=reference_spreads,
        dimensions=2,
    )


def _statistics_rows(
    reference: FloatArray,
    current: FloatArray,
    *,
    ordered: bool,
    bin_values: NumericArray | None,
    reference_spreads: NumericArray | None,
    dimensions: int,
) -> dict[DriftStatistic, FloatArray]:
    """Statistics of validated ``(rows, bins)`` histograms; see `compute_statistics`.

    ``dimensions`` is the dimensionality the caller accepted, which ``bin_values`` must match.
    """
    if ordered and (bin_values is None or reference_spreads is None):
        raise ValueError("ordered bins need both bin_values and a reference spread")
    if not ordered and (bin_values is not None or reference_spreads is not None):
        raise ValueError("unordered bins take neither bin_values nor a reference spread")
    statistics = {
        DriftStatistic.PSI: _psi_rows(reference, current, PSI_EPSILON),
        DriftStatistic.JENSEN_SHANNON: _jensen_shannon_rows(reference, current),
        DriftStatistic.HELLINGER: _hellinger_rows(reference, current),
        DriftStatistic.CHI_SQUARE_P_VALUE: _chi_square_p_value_rows(
            reference, current, CHI_SQUARE_PSEUDO_COUNT
        ),
    }
    if bin_values is not None and reference_spreads is not None:
        values = _validated_bin_values(bin_values, _shape(reference), dimensions=dimensions)
        spreads = _validated_spreads(reference_spreads, rows=reference.shape[0])
        statistics[DriftStatistic.KOLMOGOROV_SMIRNOV] = _kolmogorov_smirnov_rows(reference, current)
        statistics[DriftStatistic.WASSERSTEIN] = _wasserstein_rows(
            reference, current, values, spreads
        )
    return statistics


# The row kernels below take validated (features, bins) float arrays and return one value per
# row. Empty rows have nan proportions, and nan propagates silently through every numpy
# operation used here, which is what turns "empty histogram" into a nan result.


def _psi_rows(reference: FloatArray, current: FloatArray, epsilon: float) -> FloatArray:
    reference_share = np.maximum(_proportions(reference), epsilon)
    current_share = np.maximum(_proportions(current), epsilon)
    terms = (current_share - reference_share) * np.log(current_share / reference_share)
    psi: FloatArray = np.sum(terms, axis=1)
    return psi


def _jensen_shannon_rows(reference: FloatArray, current: FloatArray) -> FloatArray:
    reference_share = _proportions(reference)
    current_share = _proportions(current)
    midpoint = (reference_share + current_share) / 2.0
    terms: FloatArray = special.rel_entr(reference_share, midpoint) + special.rel_entr(
        current_share, midpoint
    )
    divergence_bits = np.sum(terms, axis=1) / (2.0 * np.log(2.0))
    # Rounding can leave the divergence a hair outside [0, 1] and the square root of a tiny
    # negative number is nan, so clip first.
    distance: FloatArray = np.sqrt(np.clip(divergence_bits, 0.0, 1.0))
    return distance


def _hellinger_rows(reference: FloatArray, current: FloatArray) -> FloatArray:
    # The sum-of-squares form stays non-negative under rounding, unlike 1 - sum(sqrt(p * q)).
    root_difference = np.sqrt(_proportions(reference)) - np.sqrt(_proportions(current))
    distance: FloatArray = np.sqrt(np.minimum(np.sum(root_difference**2, axis=1) / 2.0, 1.0))
    return distance


def _chi_square_p_value_rows(
    reference: FloatArray, current: FloatArray, pseudo_count: float
) -> FloatArray:
    p_values = np.full(reference.shape[0], np.nan)
    current_totals = current.sum(axis=1)
    # scipy would divide by zero on an empty current window, so only non-empty rows reach it.
    testable = (current_totals > 0) & (reference.sum(axis=1) > 0)
    if np.any(testable):
        smoothed = reference[testable] + pseudo_count
        expected = smoothed / smoothed.sum(axis=1, keepdims=True) * current_totals[testable, None]
        p_values[testable] = stats.chisquare(current[testable], expected, axis=1).pvalue
    return p_values


def _kolmogorov_smirnov_rows(reference: FloatArray, current: FloatArray) -> FloatArray:
    cdf_gap = np.cumsum(_proportions(reference) - _proportions(current), axis=1)
    statistic: FloatArray = np.clip(np.max(np.abs(cdf_gap), axis=1), 0.0, 1.0)
    return statistic


def _wasserstein_rows(
    reference: FloatArray, current: FloatArray, bin_values: FloatArray, spreads: FloatArray
) -> FloatArray:
    # For one-dimensional distributions W1 is the area between the two CDFs; both CDFs are step
    # functions that only jump at the bin values, so the area is a sum of rectangles.
    cdf_gap = np.abs(np.cumsum(_proportions(reference) - _proportions(current), axis=1))
    distance: FloatArray = np.sum(cdf_gap[:, :-1] * np.diff(bin_values, axis=1), axis=1)
    normalised: FloatArray = np.divide(
        distance, spreads, out=np.full_like(distance, np.nan), where=spreads > 0
    )
    return normalised


def _proportions(counts: FloatArray) -> FloatArray:
    """Row-normalised counts; rows with total 0 become nan instead of dividing by zero."""
    totals = counts.sum(axis=1, keepdims=True)
    proportions: FloatArray = np.divide(
        counts, totals, out=np.full_like(counts, np.nan), where=totals > 0
    )
    return proportions


def _validated_histograms(
    reference_counts: NumericArray, current_counts: NumericArray, *, dimensions: int
) -> tuple[FloatArray, FloatArray]:
    """Both histograms as float ``(rows, bins)`` arrays, or ``ValueError`` naming the problem."""
    histograms = []
    for name, counts in (
        ("reference_counts", reference_counts),
        ("current_counts", current_counts),
    ):
        array = np.asarray(counts, dtype=np.float64)
        if array.ndim != dimensions:
            raise ValueError(f"{name} must be {dimensions}-D, got shape {array.shape}")
        if array.shape[-1] < 2:
            raise ValueError(f"{name} needs at least 2 bins, got shape {array.shape}")
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(f"{name} must hold finite non-negative counts")
        histograms.append(array.reshape(-1, array.shape[-1]))
    reference, current = histograms
    if reference.shape != current.shape:
        raise ValueError(
            f"reference_counts and current_counts must cover the same bins, got shapes "
            f"{np.shape(reference_counts)} and {np.shape(current_counts)}"
        )
    return reference, current


def _validated_bin_values(
    bin_values: NumericArray, shape: tuple[int, int], *, dimensions: int
) -> FloatArray:
    """Bin values as a float ``(rows, bins)`` array matching the histograms' ``shape``."""
    values = np.asarray(bin_values, dtype=np.float64)
    if values.ndim != dimensions or values.size != shape[0] * shape[1]:
        raise ValueError(
            f"bin_values must have one value per bin of each histogram, got shape {values.shape}"
        )
    values = values.reshape(shape)
    if not np.all(np.isfinite(values)) or np.any(np.diff(values, axis=1) < 0):
        raise ValueError("bin_values must be finite and non-decreasing along the bins")
    return values


def _validated_spreads(reference_spreads: NumericArray, *, rows: int) -> FloatArray:
    spreads = np.asarray(reference_spreads, dtype=np.float64)
    if spreads.shape != (rows,):
        raise ValueError(f"reference spreads must have shape ({rows},), got {spreads.shape}")
    if not np.all(np.isfinite(spreads)) or np.any(spreads < 0):
        raise ValueError("reference spreads must be finite and non-negative")
    return spreads


def _shape(histograms: FloatArray) -> tuple[int, int]:
    rows, bins = histograms.shape
    return rows, bins


def _first(values: FloatArray) -> float:
    return float(values[0])
