"""Quality from counts: Wilson intervals of proportions, confusion figures, two-proportion tests.

Everything takes plain counts (what the windows hold) and returns ``nan`` where a figure is
undefined (no trials), never raises on empty data. Critical values come from ``scipy.stats.norm``.

>>> low, high = wilson_interval(90, 100)
>>> round(float(low), 4), round(float(high), 4)
(0.8256, 0.9448)
>>> counts = ConfusionCounts(true_positive=40, false_positive=10, false_negative=20)
>>> counts.precision, round(counts.recall, 4), round(counts.f1, 4)
(0.8, 0.6667, 0.7273)
>>> round(two_proportion_p_value(45, 100, 30, 100), 4)
0.0285
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "ConfusionCounts",
    "proportion",
    "two_proportion_p_value",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]


def proportion(successes: float, trials: float) -> float:
    return successes / trials if trials > 0 else math.nan


def wilson_interval(
    successes: npt.ArrayLike, trials: npt.ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """The Wilson score interval of ``successes / trials`` (element-wise; ``nan`` for 0 trials).

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0 and 1,
    where precision and recall of a good model live.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = float(stats.norm.isf((1 - confidence) / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    empty = n <= 0
    low: FloatArray = np.where(empty, np.nan, centre - half)
    high: FloatArray = np.where(empty, np.nan, centre + half)
    return low, high


def two_proportion_p_value(
    successes_a: float, trials_a: float, successes_b: float, trials_b: float
) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (``nan`` when undefined).

    The same test as ``statsmodels.stats.proportion.proportions_ztest`` with its default pooled
    variance: is the difference between the two proportions more than chance?
    """
    if trials_a <= 0 or trials_b <= 0:
        return math.nan
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        # Both proportions 0 or both 1: identical, no evidence of a difference.
        return 1.0
    z = (successes_a / trials_a - successes_b / trials_b) / math.sqrt(variance)
    return float(2 * stats.norm.sf(abs(z)))


@dataclass(frozen=True)
class ConfusionCounts:
    """One positive class against the rest (true negatives are not needed for these figures)."""

    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def predicted_positive(self) -> int:
        return self.true_positive + self.false_positive

    @property
    def actual_positive(self) -> int:
        return self.true_positive + self.false_negative

    @property
    def precision(self) -> float:
        return proportion(self.true_positive, self.predicted_positive)

    @property
    def recall(self) -> float:
        return proportion(self.true_positive, self.actual_positive)

    @property
    def f1(self) -> float:
        # 2 TP / (2 TP + FP + FN): defined even when precision or recall alone is not.
        twice = 2 * self.true_positive
        return proportion(twice, twice + self.false_positive + self.false_negative)
