"""The sequential detector: a per-value CUSUM per numeric feature, beside the window histograms.

Histograms judge a window, so they wait for it to fill: a 1 sd shift is reported after 10 s of
the 30 s fast window. This detector judges every value as it arrives:

1. Each value becomes a **normal score**: Φ⁻¹ of its mid-rank in the reference, interpolated in
   a table of at most :data:`SCORE_TABLE_POINTS` reference quantiles. Whatever the feature's
   distribution, an unchanged feature gives scores close to N(0, 1).
2. Each score is **standardised** by the exponentially weighted mean and variance of the scores
   before it (half-life :data:`HALF_LIFE_EVENTS`), so a slow seasonal swing is followed and a
   jump is not.
3. A **two-sided CUSUM** with an allowance of :data:`ALLOWANCE_SD` (the likelihood-ratio test of
   a 1 sd shift) alarms when either side reaches its threshold, then restarts from 0.

The thresholds hold a budget of false alarms a day (:class:`SequentialPolicy`): Siegmund's
approximation gives the threshold of independent N(0, 1) scores, and each side of each feature
multiplies it by a factor fitted on the reference (:meth:`SequentialReference.fit`): a discrete
or skewed feature, or neighbouring events that are correlated, make false alarms likelier than
N(0, 1) scores would, so the threshold rises until they are not. Missing values are skipped.

State (:class:`SeriesState`, four numbers per feature) carries from one batch to the next, and
cutting a stream into batches does not change the alarms:

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> reference = SequentialReference.fit(rng.normal(0, 1, 20_000))
>>> round(reference.upper_factor, 2), round(reference.lower_factor, 2)  # N(0, 1): no raise
(1.0, 1.0)
>>> detector = SequentialDetector([reference], SequentialPolicy(), names=("amount",))
>>> values = np.concatenate([rng.normal(0, 1, 5_000), rng.normal(1, 1, 1_000)])[:, None]
>>> times_ms = np.arange(len(values))
>>> state = detector.start()
>>> alarms = detector.advance(state, values[:3_000], times_ms[:3_000])
>>> alarms += detector.advance(state, values[3_000:], times_ms[3_000:])
>>> alarms[0].first_ms, alarms[0].count
(5021, 29)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import optimize, signal, special

if TYPE_CHECKING:
    from detectors.reference import FeatureReference

__all__ = [
    "ALLOWANCE_SD",
    "HALF_LIFE_EVENTS",
    "SCORE_TABLE_POINTS",
    "PartitionState",
    "SequentialAlarm",
    "SequentialDetector",
    "SequentialFormatError",
    "SequentialPolicy",
    "SequentialReference",
    "SeriesState",
    "cusum",
    "cusum_threshold",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ALLOWANCE_SD = 0.5
"""Half the shift the CUSUM is tuned to (1 sd): smaller shifts are left to the histograms."""
HALF_LIFE_EVENTS = 60_000
"""Events over which the running mean and variance forget half: a minute at 1,000 events/s."""
SCORE_TABLE_POINTS = 1_001
"""Reference quantiles a score is interpolated from: 0.09 µs a value, against 0.6 µs for a binary
search in a full sample and Φ⁻¹."""
FIT_NUMBERS = 200_000
"""Numbers of a feature, in arrival order, that the thresholds are fitted on."""
MINIMUM_FIT_NUMBERS = 2_000
"""Below this, a feature gets no sequential test: too little to fit its thresholds on."""
AUTOCORRELATION_BLOCK_EVENTS = 200
"""Neighbouring scores summed to measure autocorrelation (variance inflation)."""
MINIMUM_VARIANCE = 1e-4
"""Floor of the running variance: a feature stuck on one value must not divide by zero."""
SECONDS_PER_DAY = 86_400
FIRST_SPAN = 256
"""Values :func:`cusum` sums at a time after an alarm (more while no alarm comes)."""


class SequentialFormatError(ValueError):
    """A sequential block of a reference that cannot be used; names the field and the value."""


def cusum_threshold(allowance_sd: float, run_length: float) -> float:
    """The threshold of a one-sided CUSUM of N(0, 1) scores less ``allowance_sd`` that raises one
    false alarm every ``run_length`` values on average (Siegmund's approximation
    ARL = (e^(b + 1.166 d) - (b + 1.166 d) - 1) / (d^2 / 2), with d = 2 x allowance).

    >>> round(cusum_threshold(0.5, 2 * 20 * 1_000 * 86_400), 1)
    20.1
    """
    shift = 2 * allowance_sd
    information = shift**2 / 2
    corrected = float(
        optimize.brentq(lambda b: math.expm1(b) - b - run_length * information, 1e-9, 200)
    )
    return corrected - 1.166 * shift


@dataclass(frozen=True)
class SequentialPolicy:
    """The false-alarm budget: ``false_alarms_per_day`` per series over all its features, at a
    traffic of ``events_per_second``. An alarm keeps its feature drifted for ``hold_ms``."""

    false_alarms_per_day: float = 1.0
    events_per_second: float = 1_000.0
    hold_ms: int = 300_000

    def __post_init__(self) -> None:
        for name in ("false_alarms_per_day", "events_per_second"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.hold_ms, int) or self.hold_ms < 1:
            raise ValueError(f"hold_ms must be an int >= 1, got {self.hold_ms!r}")

    def base_threshold(self, features: int) -> float:
        """The threshold of one side for independent N(0, 1) scores, with ``features`` features
        and two sides each sharing the budget."""
        events_per_day = self.events_per_second * SECONDS_PER_DAY
        run_length = 2 * max(1, features) * events_per_day / self.false_alarms_per_day
        return cusum_threshold(ALLOWANCE_SD, run_length)


@dataclass(frozen=True)
class SequentialReference:
    """What the sequential test of one numeric feature needs from the reference.

    ``values`` (strictly increasing) and ``scores`` are the score table; ``mean`` and ``variance``
    are the scores' over the reference, where the running ones start. Each side's factor
    multiplies its threshold (>= 1); ``None``: that side can never gather evidence (the upper side
    of a feature at its maximum, say) and never alarms.
    """

    values: tuple[float, ...]
    scores: tuple[float, ...]
    mean: float
    variance: float
    upper_factor: float | None
    lower_factor: float | None

    def check(self, where: str) -> None:
        """Raise :class:`SequentialFormatError` unless the block is usable."""
        values, scores = self.values, self.scores
        if not 2 <= len(values) <= SCORE_TABLE_POINTS or len(scores) != len(values):
            raise SequentialFormatError(
                f"{where}.values, {where}.scores: need 2 to {SCORE_TABLE_POINTS} of each, "
                f"equally many, got {len(values)} and {len(scores)}"
            )
        if not all(math.isfinite(v) for v in (*values, *scores)):
            raise SequentialFormatError(f"{where}: values and scores must be finite")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise SequentialFormatError(f"{where}.values: must be strictly increasing")
        if any(b < a for a, b in itertools.pairwise(scores)):
            raise SequentialFormatError(f"{where}.scores: must be non-decreasing")
        if not (math.isfinite(self.mean) and math.isfinite(self.variance) and self.variance > 0):
            raise SequentialFormatError(
                f"{where}: mean must be finite and variance > 0, got {self.mean!r}, "
                f"{self.variance!r}"
            )
        for side in ("upper_factor", "lower_factor"):
            factor = getattr(self, side)
            if factor is not None and not (math.isfinite(factor) and factor >= 1):
                raise SequentialFormatError(
                    f"{where}.{side}: must be a number >= 1 or null, got {factor!r}"
                )

    @classmethod
    def fit(
        cls, numbers: FloatArray, ordered: FloatArray | None = None
    ) -> SequentialReference | None:
        """The table from ``numbers`` (a sample of the feature, any order) and the factors from
        ``ordered`` (its first numbers in arrival order; default ``numbers``), or ``None`` when
        there is too little to fit or only one value.

        A CUSUM's false alarms grow like e^(-θ h), θ the positive root of
        E[e^(θ (z - allowance))] = 1 over the standardised scores z: 1 for independent N(0, 1).
        Scores of a discrete or skewed feature have a smaller root on one side; autocorrelation
        divides it by the variance inflation of sums of neighbouring scores. Each side's factor is
        1 / min(1, θ / inflation).
        """
        ordered = numbers if ordered is None else ordered
        ordered = ordered[~np.isnan(ordered)][:FIT_NUMBERS]
        numbers = np.sort(numbers[~np.isnan(numbers)])
        if len(numbers) < MINIMUM_FIT_NUMBERS or len(ordered) < MINIMUM_FIT_NUMBERS:
            return None
        if numbers[0] == numbers[-1]:
            return None
        # Reference values at equally spaced ranks (repeats merged), each with the normal score
        # of its own mid-rank, so that a discrete feature's values score exactly.
        positions = np.linspace(0, len(numbers) - 1, SCORE_TABLE_POINTS).round().astype(np.int64)
        values = np.unique(numbers[positions])
        below = np.searchsorted(numbers, values, side="left")
        at_or_below = np.searchsorted(numbers, values, side="right")
        size = len(numbers)
        ranks = np.clip((below + at_or_below) / 2, 0.5, size - 0.5) / size
        scores = special.ndtri(ranks)
        all_scores = np.interp(numbers, values, scores)
        mean, variance = float(all_scores.mean()), float(all_scores.var())
        if variance <= 0:
            return None

        state = SeriesState.of([mean], [variance])
        standardised = _standardised(np.interp(ordered, values, scores), state, 0)
        standardised = (standardised - standardised.mean()) / standardised.std()
        blocks = len(standardised) // AUTOCORRELATION_BLOCK_EVENTS
        block_sums = (
            standardised[: blocks * AUTOCORRELATION_BLOCK_EVENTS]
            .reshape(blocks, AUTOCORRELATION_BLOCK_EVENTS)
            .sum(axis=1)
        )
        inflation = float(block_sums.var() / AUTOCORRELATION_BLOCK_EVENTS)
        # Independent scores give 1 give or take sqrt(2 / blocks): only more than three times
        # that is taken for autocorrelation, so that noise does not slow every feature down.
        if inflation < 1 + 3 * math.sqrt(2 / blocks):
            inflation = 1.0

        def factor(increments: FloatArray) -> float | None:
            if increments.max() <= 0:
                return None
            root = float(
                optimize.brentq(
                    lambda theta: float(np.log(np.mean(np.exp(theta * increments)))), 1e-6, 50
                )
            )
            return round(1 / min(1.0, root / inflation), 6)

        return cls(
            values=tuple(values.tolist()),
            scores=tuple(scores.tolist()),
            mean=mean,
            variance=variance,
            upper_factor=factor(standardised - ALLOWANCE_SD),
            lower_factor=factor(-standardised - ALLOWANCE_SD),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "scores": list(self.scores),
            "mean": self.mean,
            "variance": self.variance,
            "upper_factor": self.upper_factor,
            "lower_factor": self.lower_factor,
        }

    @classmethod
    def from_dict(cls, document: object, where: str) -> SequentialReference:
        if not isinstance(document, Mapping):
            raise SequentialFormatError(f"{where}: expected an object, got {document!r}")
        expected = {"values", "scores", "mean", "variance", "upper_factor", "lower_factor"}
        if set(document) != expected:
            raise SequentialFormatError(
                f"{where}: expected the keys {sorted(expected)}, got {sorted(document)}"
            )

        def number(key: str, value: object) -> float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SequentialFormatError(f"{where}.{key}: expected a number, got {value!r}")
            return float(value)

        def numbers(key: str) -> tuple[float, ...]:
            found = document[key]
            if not isinstance(found, list):
                raise SequentialFormatError(f"{where}.{key}: expected a list, got {found!r}")
            return tuple(number(key, value) for value in found)

        def factor(key: str) -> float | None:
            return None if document[key] is None else number(key, document[key])

        made = cls(
            values=numbers("values"),
            scores=numbers("scores"),
            mean=number("mean", document["mean"]),
            variance=number("variance", document["variance"]),
            upper_factor=factor("upper_factor"),
            lower_factor=factor("lower_factor"),
        )
        made.check(where)
        return made


class SeriesState(msgspec.Struct):
    """The running state of one series: per feature, the running mean and variance of the
    scores and the upper and lower CUSUM statistics."""

    mean: list[float]
    variance: list[float]
    upper: list[float]
    lower: list[float]

    @classmethod
    def of(cls, mean: Sequence[float], variance: Sequence[float]) -> SeriesState:
        return cls(list(mean), list(variance), [0.0] * len(mean), [0.0] * len(mean))


class PartitionState(msgspec.Struct):
    """Everything one partition's events have built, up to and including ``offset`` (-1: none),
    with the reference ``field_tag`` it was built with, by series key."""

    offset: int = -1
    field_tag: str = ""
    series: dict[str, SeriesState] = msgspec.field(default_factory=dict)

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> PartitionState:
        return msgspec.json.decode(text, type=cls)


@dataclass(frozen=True)
class SequentialAlarm:
    """The alarms of one feature in one batch of one series: the first one's event time,
    statistic and threshold, the last one's event time, and how many. ``field`` is the feature's
    name; on a window update (``detectors.window_update``), ``<series key>|<feature>``."""

    field: str
    first_ms: int
    last_ms: int
    count: int
    statistic: float
    threshold: float


class SequentialDetector:
    """The sequential tests of one reference's numeric features, ``names[i]`` with
    ``references[i]``; values come as a matrix, one column per feature in that order."""

    def __init__(
        self,
        references: Sequence[SequentialReference],
        policy: SequentialPolicy,
        *,
        names: Sequence[str],
    ) -> None:
        if len(names) != len(references):
            raise ValueError(f"{len(names)} names for {len(references)} references")
        self.references = tuple(references)
        self.names = tuple(names)
        self.policy = policy
        base = policy.base_threshold(len(references))
        self.thresholds = np.array(
            [
                [math.inf if f is None else base * f for f in (r.upper_factor, r.lower_factor)]
                for r in references
            ],
            dtype=np.float64,
        ).reshape(len(references), 2)
        self._tables = [
            (np.asarray(r.values, dtype=np.float64), np.asarray(r.scores, dtype=np.float64))
            for r in references
        ]

    @classmethod
    def for_features(
        cls, features: Sequence[FeatureReference], policy: SequentialPolicy
    ) -> SequentialDetector:
        """The tests of the ``features`` that have a sequential block, in their order."""
        tested = [(f.name, f.sequential) for f in features if f.sequential is not None]
        return cls([block for _, block in tested], policy, names=[name for name, _ in tested])

    def start(self) -> SeriesState:
        """The state of a series never seen: the reference's mean and variance, sums at 0."""
        return SeriesState.of(
            [r.mean for r in self.references], [r.variance for r in self.references]
        )

    def advance(
        self, state: SeriesState, values: FloatArray, times_ms: IntArray
    ) -> list[SequentialAlarm]:
        """Feed one series' values (rows in arrival order, ``nan`` missing) into ``state``, which
        is updated in place; return each feature's alarms."""
        alarms = []
        for column, (table_values, table_scores) in enumerate(self._tables):
            present = ~np.isnan(values[:, column])
            if not present.any():
                continue
            scores = np.interp(values[present, column], table_values, table_scores)
            standardised = _standardised(scores, state, column)
            times = times_ms[present]
            found: list[tuple[int, float, float]] = []
            for side, sign in ((0, 1.0), (1, -1.0)):
                threshold = float(self.thresholds[column, side])
                if math.isinf(threshold):
                    continue
                sums = state.upper if side == 0 else state.lower
                crossings, statistics, sums[column] = cusum(
                    sign * standardised - ALLOWANCE_SD, sums[column], threshold
                )
                found += [
                    (index, statistic, threshold)
                    for index, statistic in zip(crossings, statistics, strict=True)
                ]
            if found:
                found.sort()
                first, statistic, threshold = found[0]
                alarms.append(
                    SequentialAlarm(
                        field=self.names[column],
                        first_ms=int(times[first]),
                        last_ms=int(times[found[-1][0]]),
                        count=len(found),
                        statistic=round(statistic, 6),
                        threshold=round(threshold, 6),
                    )
                )
        return alarms


def _standardised(scores: FloatArray, state: SeriesState, column: int) -> FloatArray:
    """Each score less the running mean of the scores before it, over their running standard
    deviation; the state's mean and variance move past the last score."""
    keep = 0.5 ** (1 / HALF_LIFE_EVENTS)

    def weighted_before(values: FloatArray, initial: float) -> tuple[FloatArray, float]:
        # y_t = keep y_t-1 + (1 - keep) x_t, shifted so that position t holds y_t-1.
        after, _ = signal.lfilter([1 - keep], [1, -keep], values, zi=[keep * initial])
        after = np.asarray(after, dtype=np.float64)
        return np.concatenate([[initial], after[:-1]]), float(after[-1])

    means, state.mean[column] = weighted_before(scores, state.mean[column])
    variances, state.variance[column] = weighted_before(
        (scores - means) ** 2, state.variance[column]
    )
    standardised: FloatArray = (scores - means) / np.sqrt(np.maximum(variances, MINIMUM_VARIANCE))
    return standardised


def cusum(
    increments: FloatArray, start: float, threshold: float
) -> tuple[list[int], list[float], float]:
    """Page's CUSUM S_t = max(0, S_t-1 + increment_t) from S = ``start``, restarted at 0 after each
    alarm (S >= ``threshold``): the alarm positions, the statistic at each, and the final S.

    >>> cusum(np.array([1.0, 2.0, -5.0, 3.0, 1.0]), start=0.5, threshold=3.0)
    ([1, 3], [3.5, 3.0], 1.0)
    """
    alarms: list[int] = []
    statistics: list[float] = []
    begin, level, span = 0, start, FIRST_SPAN
    while begin < len(increments):
        # From S = level: S_t = C_t - min(0, min_j<=t C_j), C the running sum from level. Spans
        # start short after an alarm and grow while quiet, so that a burst of alarms costs its
        # length, not the batch's length per alarm.
        end = min(len(increments), begin + span)
        running = level + np.cumsum(increments[begin:end])
        statistic = running - np.minimum(np.minimum.accumulate(running), 0.0)
        crossed = np.flatnonzero(statistic >= threshold)
        if not len(crossed):
            begin, level, span = end, float(statistic[-1]), 4 * span
            continue
        alarms.append(begin + int(crossed[0]))
        statistics.append(float(statistic[crossed[0]]))
        begin, level, span = alarms[-1] + 1, 0.0, FIRST_SPAN
    return alarms, statistics, level
