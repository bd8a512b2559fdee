"""Drift decisions: turn per-feature drift statistics into drifted / not drifted / no data.

A drift statistic on its own cries wolf. At 1,000 events a second a window holds so many samples
that a significance test rejects for differences nobody cares about, and testing 20 features on
every tick multiplies the false alarms by 20. A `DriftPolicy` therefore combines:

* a significance test corrected for testing many features at once (Benjamini-Hochberg), so the
  expected share of false alarms among the flagged features stays at most ``false_discovery_rate``;
* an effect-size floor, so only differences large enough to matter are flagged;
* a minimum number of samples, below which a feature is reported as "no data" rather than
  "not drifted";
* agreement between a short window (fast to react, noisy) and a long window (slow, stable),
  optionally with a third, fast window shorter than the short one that can raise drift like it;
* for PSI, a floor that rises in small windows to what sampling noise alone reaches
  (``psi_noise_tail_probability``), so a thin window cannot raise drift.

`decide` applies a policy to one tick's statistics for every feature of a model.

Example
-------
Three features over 20 equal-mass bins of the reference; ``income`` has shifted by half a
standard deviation and ``tenure`` has only seen 200 events in the short window.

>>> import numpy as np
>>> from scipy import stats
>>> from detectors.drift_statistics import compute_statistics_by_feature
>>> rng = np.random.default_rng(3)
>>> edges = stats.norm.ppf(np.linspace(0.0, 1.0, 21))
>>> def histogram(size, shift):  # bin counts of `size` draws from a normal(shift, 1)
...     return rng.multinomial(size, np.diff(stats.norm.cdf(edges - shift)))
>>> reference = np.stack([histogram(50_000, 0.0) for _ in range(3)])
>>> short = np.stack([histogram(5_000, 0.0), histogram(5_000, 0.5), histogram(200, 0.0)])
>>> long = np.stack([histogram(25_000, 0.0), histogram(25_000, 0.5), histogram(1_000, 0.0)])
>>> def statistics(current):
...     return compute_statistics_by_feature(
...         reference, current, ordered=False, bin_values=None, reference_spreads=None
...     )
>>> decision = decide(
...     DriftPolicy(),
...     ["age", "income", "tenure"],
...     statistics_short=statistics(short),
...     statistics_long=statistics(long),
...     samples_short=short.sum(axis=1),
...     samples_long=long.sum(axis=1),
... )
>>> decision.drifted_features
('income',)
>>> decision.nodata.tolist()
[False, False, True]
>>> decision.drift_share
0.5
>>> np.round(decision.statistics_short["psi"], 3).tolist()
[0.004, 0.257, 0.086]
"""

import functools
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors.drift_statistics import DriftStatistic, FloatArray

__all__ = [
    "BoolArray",
    "DriftDecision",
    "DriftPolicy",
    "benjamini_hochberg",
    "decide",
    "psi_noise_floor",
]

BoolArray: TypeAlias = npt.NDArray[np.bool_]
_ArrayT = TypeVar("_ArrayT", bound=np.ndarray[Any, Any])

# Distances that cannot exceed 1, so a threshold above 1 could never fire and must be a mistake.
_BOUNDED_BY_ONE = frozenset(
    {
        DriftStatistic.JENSEN_SHANNON,
        DriftStatistic.HELLINGER,
        DriftStatistic.KOLMOGOROV_SMIRNOV,
    }
)


def benjamini_hochberg(p_values: FloatArray, false_discovery_rate: float) -> BoolArray:
    """Which null hypotheses the Benjamini-Hochberg procedure rejects at ``false_discovery_rate``.

    ``p_values`` is 1-D; the result is a boolean array of the same shape, True where the
    hypothesis is rejected (the feature is significantly different). Rejected means the
    BH-adjusted p-value from ``scipy.stats.false_discovery_control(method="bh")`` is at most
    ``false_discovery_rate``.

    ``nan`` p-values (features without enough data) are never rejected and are left out of the
    family, so they do not dilute the correction for the features that were tested.

    Raises ``ValueError`` if ``false_discovery_rate`` is not in (0, 1), if ``p_values`` is not 1-D,
    or if a p-value lies outside [0, 1].
    """
    if not 0.0 < false_discovery_rate < 1.0:
        raise ValueError(f"false_discovery_rate must be in (0, 1), got {false_discovery_rate!r}")
    p_values = np.asarray(p_values, dtype=np.float64)
    if p_values.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p_values.shape}")
    tested = ~np.isnan(p_values)
    if np.any((p_values[tested] < 0.0) | (p_values[tested] > 1.0)):
        raise ValueError("p_values must lie in [0, 1] or be nan")
    rejected = np.zeros(p_values.shape, dtype=np.bool_)
    if np.any(tested):
        adjusted = stats.false_discovery_control(p_values[tested], method="bh")
        rejected[tested] = adjusted <= false_discovery_rate
    return rejected


@dataclass(frozen=True)
class DriftPolicy:
    """How per-feature statistics become drift decisions; validated on construction.

    A feature drifts in a window when it has at least ``minimum_samples`` samples there and

    * ``statistic`` is a p-value: Benjamini-Hochberg rejects it at ``false_discovery_rate`` among
      the window's features with enough samples, and, if ``effect_size_statistic`` is set, that
      effect size is at least its threshold;
    * ``statistic`` is a distance: it is at least ``threshold``.

    The feature drifts overall when it drifts in both windows (``require_both_windows=True``) or
    in either window (``False``). A fast window, when `decide` is given one, counts as a second
    recent window next to the short one: "either" is any of the three; "both" is the long window
    and at least one of the fast and short windows.

    When PSI is the thresholded distance and `decide` knows the size and the occupied bins of each
    item's reference, the threshold of a window of ``n`` samples is at least the PSI that ``n``
    draws from the reference's own distribution exceed with probability
    ``psi_noise_tail_probability``: PSI is then about a chi-square statistic over ``n``, so that
    floor is ``chi2.isf(tail, bins - 1) * (1 / n + 1 / reference_samples)`` (the second term for
    the reference's own sampling noise). With 20 bins and the default tail of 1e-9 it is 0.165 at
    500 samples, 0.083 at 1,000 and 0.008 at 10,000: it only bites where a window is thin, which
    is where a short fast window would otherwise cry wolf.

    The default is the chi-square p-value under BH at a 1% false discovery rate, plus a PSI floor
    of 0.1, in both windows. The p-value alone cries wolf: with thousands of samples per window it
    rejects for differences far too small to matter, and the chi-square test treats the reference
    proportions as exact, which makes it optimistic when the window is not much smaller than the
    reference. The PSI floor keeps the significance test from flagging irrelevant differences, and
    the significance test keeps the PSI floor from flagging the noise of small windows. PSI 0.1 is
    the customary "moderate shift" line; a half-standard-deviation mean shift of a normal feature
    scores about 0.25. ``minimum_samples=500`` keeps sampling noise below the floor: for two
    identical distributions over 20 bins the PSI of an ``n``-sample window is about ``19 / n``
    (0.04 at 500, but 0.19 at 100). Use proportionally more samples for more bins.

    Attributes
    ----------
    statistic
        The deciding statistic. A p-value statistic is corrected with Benjamini-Hochberg; a
        distance statistic is compared with ``threshold``. Strings such as ``"psi"`` are accepted
        and converted, for policies read from configuration.
    threshold
        Drift threshold for a distance ``statistic`` (drift when the value is at least this).
        Must be ``None`` for a p-value statistic, whose decision is made by the FDR control.
    effect_size_statistic
        Distance that must also reach ``effect_size_threshold``; only allowed next to a p-value
        ``statistic`` (a distance statistic is its own effect size). ``None`` disables the floor.
    effect_size_threshold
        Floor for ``effect_size_statistic``; ignored when that is ``None``.
    minimum_samples
        A window with fewer samples for a feature cannot decide for that feature.
    false_discovery_rate
        Benjamini-Hochberg level for a p-value ``statistic``; ignored for distances.
    require_both_windows
        True: a feature drifts only if the short and the long window both say so, and it is "no
        data" unless both have enough samples. False: either window suffices, and it is "no data"
        only when neither has enough samples.
    per_feature_thresholds
        Feature name to a threshold replacing the distance threshold for that feature: ``threshold``
        for a distance statistic, ``effect_size_threshold`` otherwise. Needs a distance threshold
        to replace. Copied into a read-only mapping.
    psi_noise_tail_probability
        Tail probability of the PSI noise floor described above, in (0, 1); ``None`` keeps the
        fixed threshold whatever the window's size. Only used when PSI is the thresholded
        distance (``distance_statistic``) and `decide` gets ``reference_samples``.
    """

    statistic: DriftStatistic = DriftStatistic.CHI_SQUARE_P_VALUE
    threshold: float | None = None
    effect_size_statistic: DriftStatistic | None = DriftStatistic.PSI
    effect_size_threshold: float = 0.1
    minimum_samples: int = 500
    false_discovery_rate: float = 0.01
    require_both_windows: bool = True
    # Left out of the hash (a mapping is unhashable) but not out of equality, so equal policies
    # still hash equally and a policy can key a cache.
    per_feature_thresholds: Mapping[str, float] = field(default_factory=dict, hash=False)
    psi_noise_tail_probability: float | None = 1e-9

    def __post_init__(self) -> None:
        statistic = _as_statistic("statistic", self.statistic)
        object.__setattr__(self, "statistic", statistic)
        if self.effect_size_statistic is not None:
            effect_size_statistic = _as_statistic(
                "effect_size_statistic", self.effect_size_statistic
            )
            object.__setattr__(self, "effect_size_statistic", effect_size_statistic)

        if statistic.is_p_value:
            if self.threshold is not None:
                raise ValueError(
                    f"threshold must be None for the p-value statistic {statistic}, got "
                    f"{self.threshold!r}; false_discovery_rate decides instead"
                )
        else:
            if self.threshold is None:
                raise ValueError(f"threshold is required for the distance statistic {statistic}")
            _check_threshold("threshold", self.threshold, statistic)
            if self.effect_size_statistic is not None:
                raise ValueError(
                    f"effect_size_statistic must be None when statistic is the distance "
                    f"{statistic}, got {self.effect_size_statistic}"
                )

        if self.effect_size_statistic is not None:
            if self.effect_size_statistic.is_p_value:
                raise ValueError(
                    f"effect_size_statistic must be a distance, got {self.effect_size_statistic}"
                )
            _check_threshold(
                "effect_size_threshold", self.effect_size_threshold, self.effect_size_statistic
            )

        if (
            isinstance(self.minimum_samples, bool)
            or not isinstance(self.minimum_samples, int)
            or self.minimum_samples < 1
        ):
            raise ValueError(f"minimum_samples must be an int >= 1, got {self.minimum_samples!r}")
        if not 0.0 < self.false_discovery_rate < 1.0:
            raise ValueError(
                f"false_discovery_rate must be in (0, 1), got {self.false_discovery_rate!r}"
            )
        if not isinstance(self.require_both_windows, bool):
            raise ValueError(
                f"require_both_windows must be a bool, got {self.require_both_windows!r}"
            )
        tail = self.psi_noise_tail_probability
        if tail is not None and (
            isinstance(tail, bool) or not isinstance(tail, int | float) or not 0.0 < tail < 1.0
        ):
            raise ValueError(f"psi_noise_tail_probability must be in (0, 1) or None, got {tail!r}")

        # A private read-only copy, so the caller's dict cannot change a frozen policy.
        overrides = types.MappingProxyType(dict(self.per_feature_thresholds))
        object.__setattr__(self, "per_feature_thresholds", overrides)
        if overrides:
            distance = self.distance_statistic
            if distance is None:
                raise ValueError(
                    "per_feature_thresholds needs a distance threshold to override: set "
                    "effect_size_statistic or use a distance statistic"
                )
            for name, feature_threshold in overrides.items():
                if not isinstance(name, str) or not name:
                    raise ValueError(
                        f"per_feature_thresholds keys must be feature names, got {name!r}"
                    )
                _check_threshold(f"per_feature_thresholds[{name!r}]", feature_threshold, distance)

    @property
    def distance_statistic(self) -> DriftStatistic | None:
        """The statistic compared with a threshold, which ``per_feature_thresholds`` overrides."""
        return self.effect_size_statistic if self.statistic.is_p_value else self.statistic

    @property
    def distance_threshold(self) -> float | None:
        """The default threshold of `distance_statistic`; ``None`` when there is none."""
        if not self.statistic.is_p_value:
            return self.threshold
        return None if self.effect_size_statistic is None else self.effect_size_threshold

    @property
    def deciding_statistics(self) -> tuple[DriftStatistic, ...]:
        """The statistics `decide` needs for each window, in the order they are applied."""
        if self.effect_size_statistic is None:
            return (self.statistic,)
        return (self.statistic, self.effect_size_statistic)


# Arrays have no boolean equality, so a decision compares and hashes by identity.
@dataclass(frozen=True, eq=False)
class DriftDecision:
    """One tick's drift verdict for every feature of a model; arrays are read-only.

    Attributes
    ----------
    feature_names
        The features, in the order of every array below.
    drifted
        True where the feature drifted under the policy. Never True where ``nodata`` is.
    nodata
        True where too few samples were seen to decide; such a feature is neither drifted nor
        known to be stable.
    statistics_short, statistics_long
        The deciding statistics (`DriftPolicy.deciding_statistics`) for each window, as passed
        in: raw p-values, not BH-adjusted, and computed even where samples were too few.
    drift_share
        Fraction of the features with data that drifted; ``nan`` when no feature has data.
    window_drifted
        Each window's own verdict (``"fast"`` when one was given, ``"short"``, ``"long"``), before
        the windows are combined: which window raised or cleared a drift.
    statistics_fast
        The fast window's deciding statistics, when one was given.
    """

    feature_names: tuple[str, ...]
    drifted: BoolArray
    nodata: BoolArray
    statistics_short: Mapping[DriftStatistic, FloatArray]
    statistics_long: Mapping[DriftStatistic, FloatArray]
    drift_share: float
    window_drifted: Mapping[str, BoolArray] = field(default_factory=dict)
    statistics_fast: Mapping[DriftStatistic, FloatArray] | None = None

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features, in feature order."""
        return tuple(
            name for name, drifted in zip(self.feature_names, self.drifted, strict=True) if drifted
        )


def decide(
    policy: DriftPolicy,
    feature_names: Sequence[str],
    statistics_short: Mapping[DriftStatistic, FloatArray],
    statistics_long: Mapping[DriftStatistic, FloatArray],
    samples_short: npt.NDArray[np.integer[Any]],
    samples_long: npt.NDArray[np.integer[Any]],
    *,
    statistics_fast: Mapping[DriftStatistic, FloatArray] | None = None,
    samples_fast: npt.NDArray[np.integer[Any]] | None = None,
    reference_samples: npt.NDArray[np.integer[Any]] | None = None,
    reference_bins: npt.NDArray[np.integer[Any]] | None = None,
) -> DriftDecision:
    """Apply ``policy`` to one tick's statistics of every feature of a model.

    ``statistics_short`` and ``statistics_long`` map each of the policy's
    `~DriftPolicy.deciding_statistics` (other entries are ignored) to an array with one value per
    feature, in ``feature_names`` order, such as `compute_statistics_by_feature` returns for the
    short and the long window. ``samples_short`` and ``samples_long`` hold each feature's sample
    count in those windows. ``nan`` statistics never count as drift. ``statistics_fast`` and
    ``samples_fast`` (both or neither) add a fast window, decided like the others and combined as
    `DriftPolicy` says.

    ``reference_samples`` (each feature's reference size) and ``reference_bins`` (its bins with
    reference counts) turn on the PSI noise floor of `DriftPolicy.psi_noise_tail_probability`.

    The Benjamini-Hochberg family of a window is its features with enough samples: all features
    of one model are tested together, so pass every feature of the model in one call.

    Raises ``ValueError`` naming the problem when feature names are duplicated, a needed statistic
    is missing, an array does not have one value per feature, a sample count is negative, only
    one of a pair of optional arguments is given, or ``per_feature_thresholds`` names a feature
    that is not in ``feature_names`` (a typo there would otherwise silently keep the default
    threshold).
    """
    names = tuple(feature_names)
    if len(set(names)) != len(names):
        raise ValueError(f"feature_names must be unique, got {names!r}")
    unknown = sorted(set(policy.per_feature_thresholds) - set(names))
    if unknown:
        raise ValueError(f"per_feature_thresholds names unknown features: {unknown!r}")
    if (statistics_fast is None) != (samples_fast is None):
        raise ValueError("statistics_fast and samples_fast go together: pass both or neither")
    if (reference_samples is None) != (reference_bins is None):
        raise ValueError("reference_samples and reference_bins go together: pass both or neither")

    # nan only when the policy has no distance threshold, and then nothing reads it.
    default_threshold = math.nan if policy.distance_threshold is None else policy.distance_threshold
    thresholds = np.array(
        [policy.per_feature_thresholds.get(name, default_threshold) for name in names],
        dtype=np.float64,
    )
    noise_quantiles = None
    if (
        reference_samples is not None
        and reference_bins is not None
        and policy.psi_noise_tail_probability is not None
        and policy.distance_statistic is DriftStatistic.PSI
    ):
        noise_quantiles = _psi_noise_quantiles(
            policy.psi_noise_tail_probability,
            _sample_counts("reference_samples", reference_samples, len(names)),
            _sample_counts("reference_bins", reference_bins, len(names)),
        )

    windows = {"short": (statistics_short, samples_short), "long": (statistics_long, samples_long)}
    if statistics_fast is not None and samples_fast is not None:
        windows = {"fast": (statistics_fast, samples_fast), **windows}
    enough: dict[str, BoolArray] = {}
    deciding: dict[str, dict[DriftStatistic, FloatArray]] = {}
    window_drifted: dict[str, BoolArray] = {}
    for window, (statistics, samples) in windows.items():
        counts = _sample_counts(f"samples_{window}", samples, len(names))
        enough[window] = counts >= policy.minimum_samples
        deciding[window] = _deciding_statistics(
            f"statistics_{window}", statistics, policy, len(names)
        )
        window_thresholds = thresholds
        if noise_quantiles is not None:
            window_thresholds = np.maximum(thresholds, _psi_noise_floor(noise_quantiles, counts))
        window_drifted[window] = _read_only(
            _window_drifted(policy, deciding[window], enough[window], window_thresholds)
        )

    # The fast window is a second recent window: it stands in for the short one, never the long.
    recent_drifted = window_drifted["short"] | window_drifted.get("fast", False)
    recent_enough = enough["short"] | enough.get("fast", False)
    if policy.require_both_windows:
        drifted = recent_drifted & window_drifted["long"]
        nodata = ~(recent_enough & enough["long"])
    else:
        drifted = recent_drifted | window_drifted["long"]
        nodata = ~(recent_enough | enough["long"])

    with_data = int(np.count_nonzero(~nodata))
    drift_share = float(np.count_nonzero(drifted)) / with_data if with_data else math.nan
    return DriftDecision(
        feature_names=names,
        drifted=_read_only(drifted),
        nodata=_read_only(nodata),
        statistics_short=types.MappingProxyType(deciding["short"]),
        statistics_long=types.MappingProxyType(deciding["long"]),
        drift_share=drift_share,
        window_drifted=types.MappingProxyType(window_drifted),
        statistics_fast=(types.MappingProxyType(deciding["fast"]) if "fast" in deciding else None),
    )


def psi_noise_floor(
    tail_probability: float,
    samples: npt.NDArray[np.integer[Any]],
    reference_samples: npt.NDArray[np.integer[Any]],
    reference_bins: npt.NDArray[np.integer[Any]],
) -> FloatArray:
    """The PSI that ``samples`` draws from a reference's own distribution exceed with probability
    about ``tail_probability`` (see `DriftPolicy`); ``inf`` for an empty window or reference.

    >>> psi_noise_floor(1e-9, np.array([500, 1000, 10_000]), np.array([50_000] * 3),
    ...                 np.array([20] * 3)).round(4).tolist()
    [0.1647, 0.0832, 0.0098]
    """
    quantiles = _psi_noise_quantiles(
        tail_probability,
        np.asarray(reference_samples, dtype=np.int64),
        np.asarray(reference_bins, dtype=np.int64),
    )
    return _psi_noise_floor(quantiles, np.asarray(samples, dtype=np.int64))


def _psi_noise_quantiles(
    tail_probability: float,
    reference_samples: npt.NDArray[np.int64],
    reference_bins: npt.NDArray[np.int64],
) -> tuple[FloatArray, FloatArray]:
    """Per feature: the chi-square quantile of its degrees of freedom, and ``1 / N``."""
    quantiles = np.array(
        [_chi_square_quantile(tail_probability, int(bins) - 1) for bins in reference_bins.tolist()],
        dtype=np.float64,
    )
    with np.errstate(divide="ignore"):
        inverse_reference = 1.0 / reference_samples.astype(np.float64)
    return quantiles, inverse_reference


def _psi_noise_floor(
    quantiles: tuple[FloatArray, FloatArray], samples: npt.NDArray[np.int64]
) -> FloatArray:
    chi_square, inverse_reference = quantiles
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse_samples = 1.0 / samples.astype(np.float64)
        # No degrees of freedom, no noise: 0, not 0 * inf, for an empty window.
        floor: FloatArray = np.where(
            chi_square > 0, chi_square * (inverse_samples + inverse_reference), 0.0
        )
    return floor


@functools.lru_cache(maxsize=256)
def _chi_square_quantile(tail_probability: float, degrees_of_freedom: int) -> float:
    # One bin (or none) with reference mass: any other bin is a difference PSI sees in full.
    if degrees_of_freedom < 1:
        return 0.0
    return float(stats.chi2.isf(tail_probability, degrees_of_freedom))


def _window_drifted(
    policy: DriftPolicy,
    statistics: Mapping[DriftStatistic, FloatArray],
    enough_samples: BoolArray,
    thresholds: FloatArray,
) -> BoolArray:
    """Features that drift in one window; see `DriftPolicy` for the rule."""
    values = statistics[policy.statistic]
    if policy.statistic.is_p_value:
        # Features without enough samples leave the BH family instead of diluting it.
        drifted = benjamini_hochberg(
            np.where(enough_samples, values, np.nan), policy.false_discovery_rate
        )
    else:
        drifted = values >= thresholds
    if policy.effect_size_statistic is not None:
        drifted &= statistics[policy.effect_size_statistic] >= thresholds
    result: BoolArray = drifted & enough_samples
    return result


def _deciding_statistics(
    argument: str,
    statistics: Mapping[DriftStatistic, FloatArray],
    policy: DriftPolicy,
    feature_count: int,
) -> dict[DriftStatistic, FloatArray]:
    """Copies of the statistics the policy needs, checked to hold one value per feature."""
    deciding = {}
    for statistic in policy.deciding_statistics:
        if statistic not in statistics:
            raise ValueError(f"{argument} lacks {statistic}, which the policy needs")
        values = np.array(statistics[statistic], dtype=np.float64)
        if values.shape != (feature_count,):
            raise ValueError(
                f"{argument}[{statistic}] must have shape ({feature_count},), got {values.shape}"
            )
        deciding[statistic] = _read_only(values)
    return deciding


def _sample_counts(
    argument: str, samples: npt.NDArray[np.integer[Any]], feature_count: int
) -> npt.NDArray[np.int64]:
    counts = np.asarray(samples, dtype=np.int64)
    if counts.shape != (feature_count,):
        raise ValueError(f"{argument} must have shape ({feature_count},), got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError(f"{argument} must be non-negative")
    return counts


def _as_statistic(field_name: str, value: str) -> DriftStatistic:
    try:
        return DriftStatistic(value)
    except ValueError:
        choices = ", ".join(DriftStatistic)
        raise ValueError(f"{field_name} must be one of {choices}; got {value!r}") from None


def _check_threshold(field_name: str, value: object, statistic: DriftStatistic) -> None:
    upper = 1.0 if statistic in _BOUNDED_BY_ONE else math.inf
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 < value <= upper
    ):
        bounds = "in (0, 1]" if upper == 1.0 else "finite and > 0"
        raise ValueError(f"{field_name} for {statistic} must be {bounds}, got {value!r}")


def _read_only(array: _ArrayT) -> _ArrayT:
    # A frozen decision should not be changed behind its back through its arrays.
    array.setflags(write=False)
    return array
