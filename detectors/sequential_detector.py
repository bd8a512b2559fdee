"""The sequential detector: a per-value CUSUM per numeric feature, beside the window histograms.

Histograms judge a window, so they wait for it to fill: a 1 sd shift is reported after 10 s of
the 30 s fast window. This detector judges every value as it arrives:

1. Each value becomes a **normal score**: Φ⁻¹ of its mid-rank in the reference, interpolated in
   a table of at most :data:`SCORE_TABLE_POINTS` reference quantiles. Whatever the feature's
   distribution, an unchanged feature gives scores close to N(0, 1).
2. Each score is **standardised** by the exponentially weighted mean and variance of the scores
   before it (half-life :data:`HALF_LIFE_EVENTS`), so a slow seasonal swing is followed and a
   jump is not.
3. **Two-sided CUSUMs**, one per allowance in :data:`ALLOWANCES_SD`: the likelihood-ratio tests
   of shifts of 1, 0.5 and 0.25 sd, each side summing log-likelihood ratios. The feature alarms
   when any of them reaches its threshold. The 1 sd test is the fastest on large shifts; the
   others catch smaller ones, which the histograms see late or never.
4. After an alarm, the level the test alarmed at is the **new normal**: the running mean moves by
   the shift of the test that alarmed, and all sums restart from 0. A lasting shift raises one
   alarm (or two or three, as the smaller tests take up what the first move left), not one per
   value until the running mean catches up; its end raises another.

The thresholds hold a budget of false alarms a day (:class:`SequentialPolicy`), shared by every
feature, side and allowance: Siegmund's approximation gives the threshold of independent N(0, 1)
scores, and each test of each feature multiplies it by a factor fitted on the reference
(:meth:`SequentialReference.fit`): a discrete or skewed feature, or neighbouring events that are
correlated, make false alarms likelier than N(0, 1) scores would, so the threshold rises until
they are not. A budget a day is a budget per so many events, so the thresholds also rise with the
series' traffic, measured as it goes (:meth:`SequentialDetector.traffic_level`). Missing values
are skipped.

State (:class:`SeriesState`: per feature, a mean, a variance and a sum per side and allowance;
per series, its traffic) carries from one batch to the next, and cutting a stream into batches
does not change the alarms:

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> reference = SequentialReference.fit(rng.normal(0, 1, 20_000))
>>> [round(factor, 2) for factor in reference.upper_factors + reference.lower_factors]
[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
>>> detector = SequentialDetector([reference], SequentialPolicy(), names=("amount",))
>>> values = np.concatenate([rng.normal(0, 1, 5_000), rng.normal(0.5, 1, 1_000)])[:, None]
>>> times_ms = np.arange(len(values))
>>> state = detector.start()
>>> alarms = detector.advance(state, values[:3_000], times_ms[:3_000])
>>> alarms += detector.advance(state, values[3_000:], times_ms[3_000:])
>>> alarms[0].first_ms, alarms[0].count, alarms[0].shift_sd  # one lasting shift, one alarm
(5123, 1, 0.5)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import optimize, signal, special

if TYPE_CHECKING:
    from detectors.reference import FeatureReference

__all__ = [
    "ALLOWANCES_SD",
    "HALF_LIFE_EVENTS",
    "OFFSETS",
    "SCORE_TABLE_POINTS",
    "SLOPES",
    "TESTS",
    "Crossing",
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

ALLOWANCES_SD = (0.5, 0.25, 0.125)
"""Half the shifts the CUSUMs are tuned to: 1, 0.5 and 0.25 sd. A CUSUM tuned to a shift is the
fastest test of that shift and slow on much smaller ones (with an allowance of 0.5, a 0.5 sd
shift drifts nowhere and takes a random walk to its threshold). Each allowance splits the budget
a little further, which delays a 1 sd shift by about 5 %."""
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
TESTS = tuple((allowance, sign) for allowance in ALLOWANCES_SD for sign in (1.0, -1.0))
"""Each feature's one-sided tests: (allowance, +1 for the upper side or -1 for the lower one)."""
SLOPES = np.array([2 * allowance * sign for allowance, sign in TESTS])
OFFSETS = np.array([2 * allowance**2 for allowance, _ in TESTS])
"""The log-likelihood ratio of a standardised score z under test i is SLOPES[i] z - OFFSETS[i]:
2a (sign z - a), a the test's allowance (N(sign 2a, 1) against N(0, 1))."""
ADVANCE_CHUNK_VALUES = 2_048
"""Values of a series taken at a time, counted from its first (so the chunks, and the traffic
level each is judged at, do not depend on how the stream is cut into batches): after an alarm, a
feature's tests restart on the rest of its chunk, so a chunk bounds that work; and a chunk's
arrays stay in the CPU's cache (20 features cost about 20 % more an event in chunks of 4,096)."""
TRAFFIC_TIME_CONSTANT_S = 3_600.0
"""A series' traffic is measured over about the last hour of event time (events weighted by
e^(-age / this)): a peak hour counts, a one-minute burst hardly does."""
MINIMUM_TRAFFIC_SPAN_S = 60.0
"""The shortest span of event time a series' traffic is measured over: before a series spans it,
its events count as spread over it, a lower bound of its rate that still raises the thresholds
of a busy new series within its first seconds (an early burst can only raise them: fewer false
alarms, not more)."""
TRAFFIC_LEVELS_PER_DOUBLING = 4
"""Thresholds rise in steps of a quarter of a doubling of the traffic (2^(1/4) = 1.19 times):
about 0.17 log-likelihood units a step."""
MAXIMUM_TRAFFIC_LEVEL = 80
"""The highest step: 2^20 times ``events_per_second``."""
CUSUM_SPAN_VALUES = 256
"""Values :func:`cusum` sums at a time, for every test of every feature at once: small enough
that its arrays stay in the CPU's cache."""


class SequentialFormatError(ValueError):
    """A sequential block of a reference that cannot be used; names the field and the value."""


def cusum_threshold(allowance_sd: float, run_length: float) -> float:
    """The threshold of a one-sided CUSUM of the log-likelihood ratios d (z - ``allowance_sd``),
    d = 2 x allowance, of N(0, 1) scores z against N(d, 1), that raises one false alarm every
    ``run_length`` values on average (Siegmund's approximation
    ARL = (e^(b + 1.166 d) - (b + 1.166 d) - 1) / (d^2 / 2)).

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
    traffic of ``events_per_second`` or the series' own if higher. An alarm keeps its feature
    drifted for ``hold_ms``."""

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

    def base_thresholds(self, features: int) -> tuple[float, ...]:
        """The threshold of one side for independent N(0, 1) scores, per allowance, with
        ``features`` features, two sides and every allowance sharing the budget."""
        events_per_day = self.events_per_second * SECONDS_PER_DAY
        tests = 2 * len(ALLOWANCES_SD) * max(1, features)
        run_length = tests * events_per_day / self.false_alarms_per_day
        return tuple(cusum_threshold(allowance, run_length) for allowance in ALLOWANCES_SD)


@dataclass(frozen=True)
class SequentialReference:
    """What the sequential test of one numeric feature needs from the reference.

    ``values`` (strictly increasing) and ``scores`` are the score table; ``mean`` and ``variance``
    are the scores' over the reference, where the running ones start. Each side's factors, one per
    allowance of :data:`ALLOWANCES_SD`, multiply its thresholds (>= 1); ``None``: that side can
    never gather evidence (the upper side of a feature at its maximum, say) and never alarms.

    A block written before the smaller allowances has one factor per side (``upper_factor`` and
    ``lower_factor`` in the document); it is read and written that way, so its reference keeps
    its id, and only its 1 sd test runs until ``baseline build`` makes it anew.
    """

    values: tuple[float, ...]
    scores: tuple[float, ...]
    mean: float
    variance: float
    upper_factors: tuple[float | None, ...]
    lower_factors: tuple[float | None, ...]

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
        if len(self.upper_factors) != len(self.lower_factors):
            raise SequentialFormatError(
                f"{where}: upper_factors and lower_factors need as many factors, got "
                f"{list(self.upper_factors)} and {list(self.lower_factors)}"
            )
        for side in ("upper_factors", "lower_factors"):
            factors = getattr(self, side)
            if len(factors) not in (1, len(ALLOWANCES_SD)):
                raise SequentialFormatError(
                    f"{where}.{side}: need one factor per allowance {list(ALLOWANCES_SD)}, "
                    f"got {list(factors)!r}"
                )
            for factor in factors:
                if factor is not None and not (math.isfinite(factor) and factor >= 1):
                    raise SequentialFormatError(
                        f"{where}.{side}: each must be a number >= 1 or null, got {factor!r}"
                    )

    @classmethod
    def fit(
        cls, numbers: FloatArray, ordered: FloatArray | None = None
    ) -> SequentialReference | None:
        """The table from ``numbers`` (a sample of the feature, any order) and the factors from
        ``ordered`` (its first numbers in arrival order; default ``numbers``), or ``None`` when
        there is too little to fit or only one value.

        A CUSUM's false alarms grow like e^(-θ h), θ the positive root of E[e^(θ x)] = 1 over its
        increments x, the log-likelihood ratios of the standardised scores: 1 for independent
        N(0, 1). Scores of a discrete or skewed feature have a smaller root on one side;
        autocorrelation divides it by the variance inflation of sums of neighbouring scores. Each
        side's factor is 1 / min(1, θ / inflation).
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
        ordered_scores = np.interp(ordered, values, scores)[:, None]
        standardised = _standardised(ordered_scores, state, np.zeros(1, dtype=np.int64))[0][:, 0]
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

        # One factor per test, in TESTS order: upper and lower side of each allowance in turn.
        factors = [factor(ratios) for ratios in SLOPES[:, None] * standardised - OFFSETS[:, None]]
        return cls(
            values=tuple(values.tolist()),
            scores=tuple(scores.tolist()),
            mean=mean,
            variance=variance,
            upper_factors=tuple(factors[0::2]),
            lower_factors=tuple(factors[1::2]),
        )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "values": list(self.values),
            "scores": list(self.scores),
            "mean": self.mean,
            "variance": self.variance,
        }
        if len(self.upper_factors) == 1:  # written before the smaller allowances
            document["upper_factor"], document["lower_factor"] = (
                self.upper_factors[0],
                self.lower_factors[0],
            )
        else:
            document["upper_factors"] = list(self.upper_factors)
            document["lower_factors"] = list(self.lower_factors)
        return document

    @classmethod
    def from_dict(cls, document: object, where: str) -> SequentialReference:
        if not isinstance(document, Mapping):
            raise SequentialFormatError(f"{where}: expected an object, got {document!r}")
        table = {"values", "scores", "mean", "variance"}
        expected = table | {"upper_factors", "lower_factors"}
        single = table | {"upper_factor", "lower_factor"}
        if set(document) not in (expected, single):
            raise SequentialFormatError(
                f"{where}: expected the keys {sorted(expected)}, got {sorted(document)}"
            )

        def number(key: str, value: object) -> float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SequentialFormatError(f"{where}.{key}: expected a number, got {value!r}")
            try:
                return float(value)
            except OverflowError:  # a JSON integer past a float's range
                raise SequentialFormatError(f"{where}.{key}: {value} is out of range") from None

        def listed(key: str) -> list[object]:
            found = document[key]
            if not isinstance(found, list):
                raise SequentialFormatError(f"{where}.{key}: expected a list, got {found!r}")
            return found

        def factors(key: str) -> tuple[float | None, ...]:
            if key in document:
                return tuple(None if v is None else number(key, v) for v in listed(key))
            single_key = key.removesuffix("s")
            found = document[single_key]
            return (None if found is None else number(single_key, found),)

        made = cls(
            values=tuple(number("values", value) for value in listed("values")),
            scores=tuple(number("scores", value) for value in listed("scores")),
            mean=number("mean", document["mean"]),
            variance=number("variance", document["variance"]),
            upper_factors=factors("upper_factors"),
            lower_factors=factors("lower_factors"),
        )
        made.check(where)
        return made


class SeriesState(msgspec.Struct):
    """The running state of one series: per feature, the running mean and variance of the
    scores and the CUSUM statistics of its tests (upper and lower side of each allowance in
    turn, as :data:`TESTS`); and the series' traffic: ``events`` fed, the ``traffic`` weight of
    the events (e^(-age / :data:`TRAFFIC_TIME_CONSTANT_S`) each) at ``latest_ms``, the latest
    event time, since ``since_ms``, the first one's; ``level``, the traffic level of the current
    chunk (:meth:`SequentialDetector.thresholds_at`).

    A state stored before the smaller allowances has ``upper`` and ``lower`` instead of ``sums``:
    they are ignored when it is read, and its sums start again from 0 (:meth:`sums_of`). One
    stored before traffic was measured starts measuring it."""

    mean: list[float]
    variance: list[float]
    sums: list[list[float]] = msgspec.field(default_factory=list)
    events: int = 0
    traffic: float = 0.0
    latest_ms: int = 0
    since_ms: int | None = None
    level: int = 0

    @classmethod
    def of(cls, mean: Sequence[float], variance: Sequence[float]) -> SeriesState:
        return cls(list(mean), list(variance), [[0.0] * len(TESTS) for _ in mean])

    def sums_of(self, column: int) -> FloatArray:
        """The sums of feature ``column`` (all 0 for a state stored without them)."""
        if len(self.sums) != len(self.mean):
            self.sums = [[0.0] * len(TESTS) for _ in self.mean]
        return np.asarray(self.sums[column], dtype=np.float64)


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
    statistic and threshold, the last one's event time, how many, and ``shift_sd``, the sum of
    the shifts their tests are tuned to (+1 for an upper 1 sd test, -0.25 for a lower 0.25 sd
    one): how far, in standard deviations of the scores, the alarms moved the running mean.
    ``field`` is the feature's name; on a window update (``detectors.window_update``),
    ``<series key>|<feature>``."""

    field: str
    first_ms: int
    last_ms: int
    count: int
    statistic: float
    threshold: float
    shift_sd: float


class _Crossed(NamedTuple):
    """One alarm of a feature, as :meth:`SequentialDetector.advance` gathers them."""

    at_ms: int
    statistic: float
    threshold: float
    shift_sd: float


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
        # One row per feature, one column per test (TESTS); a test without a factor never alarms.
        self._factors = np.full((len(references), len(TESTS)), math.inf)
        for row, reference in enumerate(references):
            sides = zip(reference.upper_factors, reference.lower_factors, strict=True)
            for allowance, factors in enumerate(sides):
                for side, factor in enumerate(factors):
                    if factor is not None:
                        self._factors[row, 2 * allowance + side] = factor
        self._thresholds_by_level: dict[int, FloatArray] = {}
        self.thresholds = self.thresholds_at(0)
        """The thresholds at the policy's traffic (features x tests)."""
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

    def thresholds_at(self, level: int) -> FloatArray:
        """The thresholds (features x tests) of a series whose traffic is at ``level``: as if
        ``events_per_second`` were 2^(level / :data:`TRAFFIC_LEVELS_PER_DOUBLING`) times the
        policy's. They grow with the logarithm of the traffic, so that the budget of false
        alarms a day holds however many events a day the series has."""
        found = self._thresholds_by_level.get(level)
        if found is None:
            traffic = 2 ** (level / TRAFFIC_LEVELS_PER_DOUBLING) * self.policy.events_per_second
            policy = dataclasses.replace(self.policy, events_per_second=traffic)
            bases = np.repeat(policy.base_thresholds(len(self.references)), 2)  # TESTS order
            found = self._thresholds_by_level[level] = self._factors * bases
        return found

    def traffic_level(self, state: SeriesState) -> int:
        """The level of the traffic measured in ``state``, over at least
        :data:`MINIMUM_TRAFFIC_SPAN_S` of event time: 0 at or below the policy's
        ``events_per_second``, else the steps of :data:`TRAFFIC_LEVELS_PER_DOUBLING` a doubling
        it is above it (rounded down)."""
        if state.since_ms is None:
            return 0
        span_s = max(MINIMUM_TRAFFIC_SPAN_S, (state.latest_ms - state.since_ms) / 1000)
        # A steady rate r over the span weighs r T (1 - e^(-span / T)), T the time constant.
        per_second = state.traffic / (
            TRAFFIC_TIME_CONSTANT_S * -math.expm1(-span_s / TRAFFIC_TIME_CONSTANT_S)
        )
        ratio = per_second / self.policy.events_per_second
        if ratio <= 1:
            return 0
        steps = math.floor(TRAFFIC_LEVELS_PER_DOUBLING * math.log2(ratio))
        return min(MAXIMUM_TRAFFIC_LEVEL, steps)

    def start(self) -> SeriesState:
        """The state of a series never seen: the reference's mean and variance, sums at 0."""
        return SeriesState.of(
            [r.mean for r in self.references], [r.variance for r in self.references]
        )

    def advance(
        self, state: SeriesState, values: FloatArray, times_ms: IntArray
    ) -> list[SequentialAlarm]:
        """Feed one series' values (rows in arrival order, ``nan`` missing) into ``state``, which
        is updated in place; return each feature's alarms, in feature order."""
        found: dict[int, list[_Crossed]] = {}
        begin = 0
        while begin < len(values):
            into_chunk = state.events % ADVANCE_CHUNK_VALUES
            if into_chunk == 0:
                state.level = self.traffic_level(state)
            end = min(len(values), begin + ADVANCE_CHUNK_VALUES - into_chunk)
            chunk_values, chunk_times_ms = values[begin:end], times_ms[begin:end]
            thresholds = self.thresholds_at(state.level)
            present = ~np.isnan(chunk_values)
            complete = present.all(axis=0)
            # Features without a missing value move together, a numpy call for all; the others
            # one at a time, each over its own values.
            self._advance_columns(
                state, np.flatnonzero(complete), chunk_values, chunk_times_ms, thresholds, found
            )
            for column in np.flatnonzero(~complete).tolist():
                rows = present[:, column]
                if not rows.any():
                    continue
                self._advance_columns(
                    state,
                    np.array([column]),
                    chunk_values[rows],
                    chunk_times_ms[rows],
                    thresholds,
                    found,
                )
            _count_traffic(state, chunk_times_ms)
            begin = end
        return [
            SequentialAlarm(
                field=self.names[column],
                first_ms=alarms[0].at_ms,
                last_ms=alarms[-1].at_ms,
                count=len(alarms),
                statistic=round(alarms[0].statistic, 6),
                threshold=round(alarms[0].threshold, 6),
                shift_sd=sum(alarm.shift_sd for alarm in alarms),
            )
            for column, alarms in sorted(found.items())
        ]

    def _advance_columns(
        self,
        state: SeriesState,
        columns: IntArray,
        values: FloatArray,
        times_ms: IntArray,
        thresholds: FloatArray,
        found: dict[int, list[_Crossed]],
    ) -> None:
        """Feed the rows of ``values`` (none missing in ``columns``) into ``state``, judged
        against ``thresholds`` (features x tests); add each alarm to ``found``."""
        work = [(columns, 0)] if len(columns) and len(values) else []
        while work:
            columns, origin = work.pop()
            scores = np.column_stack(
                [np.interp(values[origin:, c], *self._tables[c]) for c in columns.tolist()]
            )
            standardised, means_after, variances_after = _standardised(scores, state, columns)
            starts = np.array([state.sums_of(column) for column in columns.tolist()])
            crossings, sums = cusum(standardised.T, SLOPES, OFFSETS, starts, thresholds[columns])
            for index, column in enumerate(columns.tolist()):
                crossing = crossings[index]
                if crossing is None:
                    state.sums[column] = sums[index].tolist()
                    continue
                at, test = crossing.position, crossing.test
                allowance, sign = TESTS[test]
                shift_sd = sign * 2 * allowance
                found.setdefault(column, []).append(
                    _Crossed(
                        int(times_ms[origin + at]),
                        crossing.statistic,
                        float(thresholds[column, test]),
                        shift_sd,
                    )
                )
                # From the next value on, the stream is judged against the level the test alarmed
                # at: the running mean moves by the shift the test is tuned to. A lasting shift
                # then raises one alarm, not one per value until the running mean catches up.
                variance = float(variances_after[at, index])
                spread = math.sqrt(max(variance, MINIMUM_VARIANCE))
                state.mean[column] = float(means_after[at, index]) + shift_sd * spread
                state.variance[column] = variance
                state.sums[column] = [0.0] * len(TESTS)
                if origin + at + 1 < len(values):
                    work.append((np.array([column]), origin + at + 1))


def _count_traffic(state: SeriesState, times_ms: IntArray) -> None:
    """Add a chunk's events (their event times, in arrival order; at least one) to the state's
    traffic.

    The weight at the latest time T, the sum of e^(-(T - t) / time constant) over every event
    so far, depends only on the events and T: adding chunk by chunk gives the same weight
    however the stream is cut."""
    latest_ms = int(times_ms.max())
    if state.since_ms is None:
        state.since_ms, state.latest_ms = int(times_ms[0]), latest_ms
    latest_ms = max(latest_ms, state.latest_ms)
    per_ms = 1 / (1000 * TRAFFIC_TIME_CONSTANT_S)
    state.traffic = state.traffic * math.exp((state.latest_ms - latest_ms) * per_ms) + float(
        np.exp((times_ms - latest_ms) * per_ms).sum()
    )
    state.latest_ms = latest_ms
    state.events += len(times_ms)


def _standardised(
    scores: FloatArray, state: SeriesState, columns: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each score (a column per feature of ``columns``) less the running mean of the scores
    before it, over their running standard deviation; and the running means and variances after
    each score. The state's means and variances move past the last scores."""
    keep = 0.5 ** (1 / HALF_LIFE_EVENTS)

    def weighted(values: FloatArray, initial: FloatArray) -> tuple[FloatArray, FloatArray]:
        # y_t = keep y_t-1 + (1 - keep) x_t: y before (row t holds y_t-1) and after each x_t.
        after, _ = signal.lfilter([1 - keep], [1, -keep], values, axis=0, zi=[keep * initial])
        after = np.asarray(after, dtype=np.float64)
        return np.vstack([initial, after[:-1]]), after

    means, means_after = weighted(scores, np.array([state.mean[c] for c in columns]))
    variances, variances_after = weighted(
        (scores - means) ** 2, np.array([state.variance[c] for c in columns])
    )
    for index, column in enumerate(columns.tolist()):
        state.mean[column] = float(means_after[-1, index])
        state.variance[column] = float(variances_after[-1, index])
    standardised: FloatArray = (scores - means) / np.sqrt(np.maximum(variances, MINIMUM_VARIANCE))
    return standardised, means_after, variances_after


@dataclass(frozen=True)
class Crossing:
    """The first alarm of a feature in :func:`cusum`: the value whose increment took a test's S
    to its threshold, which test (the first in order if several did), and its S."""

    position: int
    test: int
    statistic: float


def cusum(
    scores: FloatArray,
    slopes: FloatArray,
    offsets: FloatArray,
    start: FloatArray,
    thresholds: FloatArray,
) -> tuple[list[Crossing | None], FloatArray]:
    """Page's CUSUMs S_t = max(0, S_t-1 + slopes[i] x scores_t - offsets[i]) of each feature's
    tests i, from S = ``start`` (``scores``: features x values; ``start``, ``thresholds``:
    features x tests), up to each feature's first crossing of a threshold; and every S at the end
    (meaningless for a feature that crossed: its caller restarts it).

    >>> scores, one = np.array([[1.0, 2.0, -5.0, 3.0, 1.0]]), np.array([1.0])
    >>> cusum(scores, one, one - 1, np.array([[0.5]]), np.array([[3.0]]))[0]
    [Crossing(position=1, test=0, statistic=3.5)]
    >>> cusum(scores[:, 2:], one, one - 1, np.array([[0.0]]), np.array([[5.0]]))[1].tolist()
    [[4.0]]
    """
    features, length = scores.shape
    crossings: list[Crossing | None] = [None] * features
    levels = np.array(start, dtype=np.float64)
    going = np.arange(features)
    for begin in range(0, length, CUSUM_SPAN_VALUES):
        end = min(length, begin + CUSUM_SPAN_VALUES)
        statistics = cusum_statistics(scores[going, begin:end], slopes, offsets, levels[going])
        levels[going] = statistics[:, :, -1]
        # The peak of each test over the span says which features crossed; only those are looked
        # at value by value.
        crossed = (statistics.max(axis=2) >= thresholds[going]).any(axis=1)
        for index in np.flatnonzero(crossed).tolist():
            over = statistics[index] >= thresholds[going[index]][:, None]
            column = int(np.flatnonzero(over.any(axis=0))[0])
            test = int(np.flatnonzero(over[:, column])[0])
            crossings[int(going[index])] = Crossing(
                begin + column, test, float(statistics[index, test, column])
            )
        going = going[~crossed]
        if not len(going):
            break
    return crossings, levels


def cusum_statistics(
    scores: FloatArray, slopes: FloatArray, offsets: FloatArray, levels: FloatArray
) -> FloatArray:
    """S (features x tests x values) from S = ``levels``: S_t = C_t - min(0, min_j<=t C_j), C the
    running sum of the increments from the level, which one running sum of the scores gives for
    every test."""
    steps = np.arange(1, scores.shape[1] + 1, dtype=np.float64)
    # In place where it can be: this is the detector's hot loop.
    statistics: FloatArray = slopes[None, :, None] * np.cumsum(scores, axis=1)[:, None, :]
    statistics += levels[:, :, None]
    statistics -= offsets[:, None] * steps
    floor = np.minimum.accumulate(statistics, axis=2)
    np.minimum(floor, 0.0, out=floor)
    statistics -= floor
    return statistics
