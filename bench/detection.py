"""Drift detection quality: driftline's defaults against River's ADWIN and KSWIN, seeded.

Scenarios (20 features, N(0, 1) unless said otherwise, 1,000 events/s of event time):

- ``abrupt_<d>sigma_<k>of20``: the mean of ``k`` features jumps by ``d`` standard deviations
  (d in 0.25, 0.5, 1; k in 1, 5) after 10 minutes; watched for 10 more minutes;
- ``gradual_1sigma_per_hour_5of20``: the mean of 5 features climbs linearly by 1 sd over an hour;
- ``variance_1.5x_5of20``: the standard deviation of 5 features becomes 1.5;
- ``categorical_shift``: feature ``f0`` is a 10-category feature whose frequencies change
  (PSI about 0.3);
- ``seasonal_day``: 24 hours without a change but with daily seasonality: the event rate swings
  between 500 and 1,500 events/s and every feature's mean by +-0.2 sd over the day; the reference
  is a sample of the whole day. driftline simulates it in two worker processes (hours 0-12, and
  11-24 counting from hour 12: the first hour warms the long window up) while the rest runs;
- ``low_traffic_day``: 24 hours without a change at 25 events/s, so that the 30 s fast window
  holds 500 to 750 events, right at ``drift.minimum_samples``; with the defaults and without
  the PSI noise floor (``drift.psi_noise_tail_probability: null``), in two more workers.

What runs:

- driftline: the embedded backtest engine (``driftline.backtest.Backtest``: in-memory window
  store, evaluator, statistics, decisions) with the default config; the events of each tick
  interval are binned with the reference's bins (``FeatureReference.bin_numbers``, the code the
  consumer uses) and applied as one window update, then the evaluator ticks (every 5 s of event
  time, ``--tick-seconds`` to change it) and judges the fast (30 s), short (5 min) and long
  (1 h) windows. For the 24-hour days the bin counts of each tick interval are drawn from the
  multinomial distribution of the bins, which is exactly the distribution of binning fresh
  draws, without drawing 1.7 billion numbers.
- River ``ADWIN()`` and ``KSWIN(seed=...)``, defaults, one detector per feature, fed the same raw
  values as driftline in the change scenarios, each run until its first alarm after the change.
  Their false alarms per day come from the seasonal day: ADWIN on one feature for the whole day
  (and, for comparison, for 2 hours without seasonality), KSWIN (about 0.4 ms per update) on one
  feature for the first 20,000 events, all scaled to 20 features and 24 hours.
- The optimal detector held to the target's false-alarm budget (one a day over 20 features at
  1,000 events/s): Page's CUSUM of the exact log-likelihood ratio, knowing the distribution before
  and after the shift, on the abrupt scenarios' changed features and, with ADWIN beside it, over
  100 seeded streams per shift size. No detector held to that budget is faster on average
  (Lorden 1971, Moustakides 1986), so its delay says what the delay target can ask.
- Pooling the features (``pooled_features_at_1_false_alarm_per_day``): what a detector summing
  the features' evidence would gain when 5 of 20 features shift, and lose when 1 does. Liu, Zhang
  and Mei's sum-shrinkage of the optimal per-feature CUSUMs (``PooledCusum``), its threshold
  fitted by simulation to one false alarm a day over the model, against ADWIN and the optimal
  per-feature detector: the model's first alarm, over 100 seeded streams per shift size. Then
  with every two features correlated 0.3: its false alarms a day at the threshold fitted for
  independent features, and its delays at one fitted for the correlation; and with those
  features each adjusted for the others (``FeatureStreams``). driftline does not pool features;
  this measures whether it should.
- driftline's sequential test (``detectors.sequential_detector``, on by default): per-value
  two-sided CUSUMs tuned for shifts of 1, 0.5 and 0.25 sd, on normal scores standardised by
  their recent mean and spread, with thresholds fitted to the reference for the same budget. In
  the change scenarios it runs on every numeric feature, fed each tick's events as one batch as
  the consumer feeds it, beside the windows: driftline's delay is the earlier of the two
  (``driftline``; each alone under ``driftline_windows_only`` and ``driftline_sequential_test``).
  It also runs over the 100 streams per shift size, and without a change on the seasonal day's
  f0 and on 2 hours each of skewed, discrete, binary and autocorrelated features, with Gaussian
  thresholds and with the fitted ones (``SequentialCalibration``): what it costs in false
  alarms on traffic less tidy than N(0, 1). (The 24-hour days draw bin counts, not values, so
  the sequential test's false alarms there come from that f0 run.) Its thresholds follow each
  series' measured traffic: N(0, 1) values at 1, 10 and 100 times the traffic its policy
  assumes, with those thresholds and with the policy's throughout
  (``sequential_test_by_traffic``).

Measured: detection delay (event-time seconds and events after the change; gradual drift: after
the drift started), missed drifts (no alarm within the scenario), false alarms (alarms on features
that did not change, and on the simulated days), the cost per event (driftline: the whole
backtest path from JSON lines, decoding included; River: one update per feature), and the cost of
one evaluator tick with full windows, with and without the fast window.

Prints one JSON object. ``--quick`` shortens the days to 2 hours and skips KSWIN's false-alarm
run; the default run takes about 21 minutes on 2 cores, ``--quick`` about 7.

    python bench/detection.py [--quick] [--seed 7] [--tick-seconds 5] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import signal, stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from river import drift as river_drift  # noqa: E402

from alerting.drift_figures import DriftTransition  # noqa: E402
from consumers.batching import BatchAssembler  # noqa: E402
from consumers.kafka_consumer import binning_from_config  # noqa: E402
from consumers.window_writer import WindowWriter  # noqa: E402
from detectors.reference import Reference  # noqa: E402
from detectors.reference_builder import ReferenceBuilder  # noqa: E402
from detectors.sequential_detector import (  # noqa: E402
    SequentialDetector,
    SequentialPolicy,
    SequentialReference,
    SeriesState,
    cusum,
    cusum_statistics,
    cusum_threshold,
)
from detectors.series import Series  # noqa: E402
from detectors.stores.memory_store import MemoryWindowStore  # noqa: E402
from detectors.window_update import (  # noqa: E402
    PartitionRange,
    WindowUpdate,
    feature_metric,
)
from driftline.backtest import Backtest  # noqa: E402
from driftline.config import Config, parse_config  # noqa: E402
from driftline.events import InferenceEvent  # noqa: E402
from driftline.synthetic import TrafficSpec, synthetic_events  # noqa: E402

RATE_PER_S = 1000
LOW_TRAFFIC_PER_S = 25.0
FEATURES = 20
MODEL = "bench"
SERIES = Series("v2", "stable")
DAY_S = 86_400
START_MS = 1_700_000_000_000
CATEGORIES = np.array([f"c{i}" for i in range(10)])
USUAL_WEIGHTS = np.array([0.25, 0.2, 0.15, 0.1, 0.08, 0.07, 0.06, 0.04, 0.03, 0.02])
SHIFTED_WEIGHTS = np.array([0.12, 0.2, 0.15, 0.1, 0.08, 0.07, 0.06, 0.04, 0.03, 0.15])


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    changed: tuple[int, ...]
    change_s: float
    duration_s: float
    mean: Callable[[np.ndarray], np.ndarray]  # seconds since start -> (n, FEATURES) means
    spread: Callable[[np.ndarray], np.ndarray]
    categorical: bool = False
    shift_sd: float = 0.0  # abrupt mean shifts: their size, for the optimal-detector bound


def _abrupt(size: float, count: int) -> Scenario:
    changed = tuple(range(count))

    def mean(seconds: np.ndarray) -> np.ndarray:
        shift = np.zeros((len(seconds), FEATURES))
        shift[:, :count] = np.where(seconds >= 600, size, 0.0)[:, None]
        return shift

    return Scenario(
        f"abrupt_{size:g}sigma_{count}of20",
        f"mean of {count} feature(s) jumps by {size:g} sd after 10 min",
        changed,
        600,
        1200,
        mean,
        lambda seconds: np.ones((len(seconds), FEATURES)),
        shift_sd=size,
    )


def _gradual() -> Scenario:
    def mean(seconds: np.ndarray) -> np.ndarray:
        shift = np.zeros((len(seconds), FEATURES))
        shift[:, :5] = np.clip((seconds - 600) / 3600, 0, None)[:, None]
        return shift

    return Scenario(
        "gradual_1sigma_per_hour_5of20",
        "mean of 5 features climbs by 1 sd per hour, from minute 10",
        tuple(range(5)),
        600,
        600 + 3600,
        mean,
        lambda seconds: np.ones((len(seconds), FEATURES)),
    )


def _variance() -> Scenario:
    def spread(seconds: np.ndarray) -> np.ndarray:
        values = np.ones((len(seconds), FEATURES))
        values[:, :5] = np.where(seconds >= 600, 1.5, 1.0)[:, None]
        return values

    return Scenario(
        "variance_1.5x_5of20",
        "standard deviation of 5 features becomes 1.5 after 10 min",
        tuple(range(5)),
        600,
        1200,
        lambda seconds: np.zeros((len(seconds), FEATURES)),
        spread,
    )


def _categorical() -> Scenario:
    return Scenario(
        "categorical_shift",
        "category frequencies of f0 (10 categories) change after 10 min",
        (0,),
        600,
        1200,
        lambda seconds: np.zeros((len(seconds), FEATURES)),
        lambda seconds: np.ones((len(seconds), FEATURES)),
        categorical=True,
    )


def seasonal_mean(seconds: np.ndarray, features: int = FEATURES) -> np.ndarray:
    """The means (n, ``features``) of the first ``features`` features at these moments."""
    phases = np.linspace(0, 2 * math.pi, FEATURES, endpoint=False)[:features]
    return 0.2 * np.sin(2 * math.pi * seconds[:, None] / DAY_S + phases[None, :])


def seasonal_rate(seconds: np.ndarray) -> np.ndarray:
    return RATE_PER_S * (1 + 0.5 * np.sin(2 * math.pi * seconds / DAY_S))


def draw(scenario: Scenario, seconds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Raw values (n, FEATURES); for the categorical scenario f0 holds category codes."""
    values = rng.standard_normal((len(seconds), FEATURES))
    values = values * scenario.spread(seconds) + scenario.mean(seconds)
    if scenario.categorical:
        weights = np.where(seconds[:, None] >= scenario.change_s, SHIFTED_WEIGHTS, USUAL_WEIGHTS)
        cumulative = np.cumsum(weights, axis=1)
        values[:, 0] = (rng.random(len(seconds))[:, None] > cumulative).sum(axis=1)
    return np.asarray(values)


def build_reference(values: np.ndarray, categorical: bool, confidence_bins: int) -> Reference:
    builder = ReferenceBuilder(MODEL, confidence_bins=confidence_bins)
    names = [f"f{i}" for i in range(FEATURES)]
    events = []
    for row, vector in enumerate(values.tolist()):
        features: dict[str, float | str | bool | None] = dict(zip(names, vector, strict=True))
        if categorical:
            features["f0"] = str(CATEGORIES[int(vector[0])])
        events.append(
            InferenceEvent.build(
                event_id=f"r{row}", ts=START_MS, model=MODEL, version="v1", features=features
            )
        )
    builder.add(events)
    built = builder.build(created_at_ms=START_MS, source="bench")
    return Reference(MODEL, built.created_at_ms, built.features, source="bench")


class DriftlineRun:
    """The backtest engine fed one tick interval of binned events at a time."""

    def __init__(self, config: Config, reference: Reference) -> None:
        self.transitions: list[DriftTransition] = []
        self.engine = Backtest(config, [reference], on_transition=self.transitions.append)
        self.engine.store.admit_models([MODEL], 10)
        self.reference = reference
        self.tick_ms = self.engine.tick_ms
        self.offset = 0
        self.prefix = f"{SERIES.key}|"
        self.metrics = [feature_metric(reference.field_tag, f.name) for f in reference.features]
        self.ticks = 0
        self.tick_seconds = 0.0

    def bin_counts(self, values: np.ndarray, categorical: bool) -> np.ndarray:
        features = self.reference.features
        counts = np.zeros((FEATURES, features[0].bin_count), dtype=np.int64)
        rows = []
        for feature in features:
            column = values[:, int(feature.name[1:])]  # references list features by name
            if categorical and feature.name == "f0":
                bins = feature.bin_column(list(CATEGORIES))[column.astype(np.int64)]
            else:
                bins = feature.bin_numbers(np.ascontiguousarray(column))
            rows.append(np.bincount(bins, minlength=feature.bin_count))
        width = max(len(row) for row in rows)
        counts = np.zeros((FEATURES, width), dtype=np.int64)
        for index, row in enumerate(rows):
            counts[index, : len(row)] = row
        return counts

    def feed(self, start_ms: int, counts: np.ndarray, events: int, tick: bool = True) -> None:
        """Apply one tick interval's counts (``counts[feature, bin]``), then tick at its end
        (unless ``tick`` is False: filling windows up before measuring)."""
        if events:
            prefix = self.prefix
            fields = {prefix + "events": events}
            for index, metric in enumerate(self.metrics):
                row = counts[index]
                for bin_index in np.flatnonzero(row).tolist():
                    fields[f"{prefix}{metric}:{bin_index}"] = int(row[bin_index])
            layout = self.engine.layout
            update = WindowUpdate(
                model=MODEL,
                ranges=[PartitionRange(0, self.offset, self.offset + events - 1)],
                buckets={start_ms - start_ms % layout.bucket_ms: fields},
                totals={},
                newest_event_ms=start_ms + self.tick_ms - 1,
            )
            self.offset += events
            self.engine.now_ms = start_ms + self.tick_ms
            self.engine.store.apply(update)
        if not tick:
            return
        started = time.perf_counter()
        self.engine.tick(start_ms + self.tick_ms)
        self.tick_seconds += time.perf_counter() - started
        self.ticks += 1

    def first_alarms(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for transition in self.transitions:
            if transition.state == "drifted":
                first.setdefault(transition.feature, transition.at_ms)
        return first


def run_river(
    make: Callable[[], Any], column: Sequence[float], change_index: int
) -> tuple[int | None, int]:
    """First alarm at or after ``change_index`` (None: missed) and alarms before it."""
    detector = make()
    before = 0
    for index, value in enumerate(column):
        detector.update(value)
        if detector.drift_detected:
            if index >= change_index:
                return index, before
            before += 1
    return None, before


# The false-alarm budget of the target, one alarm a day, spread over one detector per feature:
# each must go this many events between false alarms on average.
ONE_A_DAY_RUN_LENGTH = FEATURES * RATE_PER_S * DAY_S


def optimal_cusum_threshold(shift_sd: float, run_length: float) -> float:
    """The threshold giving ``optimal_cusum`` that average run length between false alarms
    (Siegmund's approximation; the sequential test's allowance is half the shift)."""
    return cusum_threshold(shift_sd / 2, run_length)


def cusum_first_alarm(
    column: np.ndarray, slope: float, offset: float, threshold: float, change_index: int
) -> tuple[int | None, int]:
    """Page's CUSUM of slope x value - offset, restarted from 0 after each alarm (driftline's,
    ``detectors.sequential_detector``): its first alarm at or after ``change_index`` (None:
    missed), and the alarms before it."""
    slopes, offsets, thresholds = np.array([slope]), np.array([offset]), np.array([[threshold]])
    alarms_before, origin = 0, 0
    while True:
        [crossing], _ = cusum(column[None, origin:], slopes, offsets, np.zeros((1, 1)), thresholds)
        if crossing is None:
            return None, alarms_before
        if origin + crossing.position >= change_index:
            return origin + crossing.position, alarms_before
        alarms_before, origin = alarms_before + 1, origin + crossing.position + 1


def optimal_cusum(column: np.ndarray, shift_sd: float, change_index: int) -> tuple[int | None, int]:
    """Page's CUSUM of the log-likelihood ratio of N(0, 1) against N(``shift_sd``, 1), held to one
    false alarm a day: first alarm at or after ``change_index`` (None: missed), alarms before it.

    It knows what no real detector knows (the distribution before and after, the direction) and
    is then the fastest detector there is at a given false-alarm rate (Lorden 1971, Moustakides
    1986): its delay is a floor for ADWIN or anything else held to the same budget.
    """
    threshold = optimal_cusum_threshold(shift_sd, ONE_A_DAY_RUN_LENGTH)
    return cusum_first_alarm(column, shift_sd, shift_sd**2 / 2, threshold, change_index)


# The sequential test of driftline (detectors.sequential_detector): each value becomes a normal
# score through the reference, is standardised by the running mean and variance of the scores
# before it (a slow swing, like the seasonal day's, is followed and a jump is not), and feeds
# two-sided CUSUMs with allowances of 0.5, 0.25 and 0.125 sd, the likelihood-ratio tests of 1, 0.5
# and 0.25 sd shifts. Their thresholds hold one false alarm a day over 20 features at 1,000
# events/s: 21.2, 20.4 and 19.3 for independent N(0, 1) scores, raised per feature by factors
# fitted on the reference.


@dataclass(frozen=True)
class SequentialCalibration:
    """The sequential test of one feature, judged as one of 20: the product's detector with that
    feature's share of the false-alarm budget, which gives it the thresholds of 20 features."""

    detector: SequentialDetector

    @classmethod
    def gaussian(cls, sample: np.ndarray) -> SequentialCalibration:
        """The thresholds of independent N(0, 1) scores, whatever the sample says."""
        fitted = SequentialReference.fit(sample)
        assert fitted is not None
        ones = (1.0,) * len(fitted.upper_factors)
        return cls.of(dataclasses.replace(fitted, upper_factors=ones, lower_factors=ones))

    @classmethod
    def fitted(cls, sample: np.ndarray) -> SequentialCalibration:
        """The thresholds fitted on the sample, as ``baseline build`` fits them."""
        fitted = SequentialReference.fit(sample)
        assert fitted is not None
        return cls.of(fitted)

    @classmethod
    def of(cls, reference: SequentialReference) -> SequentialCalibration:
        # One feature's share of a budget of one a day over 20: the thresholds of 20 features.
        policy = SequentialPolicy(false_alarms_per_day=1 / FEATURES)
        return cls(SequentialDetector([reference], policy, names=["f0"]))

    @property
    def thresholds(self) -> list[float | None]:
        """Per test (upper, then lower side of each allowance); None: that side never alarms
        (its increments are never positive, as the lower side of a feature that is 0 nine
        times in ten with a 1 sd allowance)."""
        return [
            None if math.isinf(threshold) else round(threshold, 2)
            for threshold in self.detector.thresholds[0].tolist()
        ]

    def first_alarm(self, values: np.ndarray, change_index: int) -> int | None:
        """The first alarm at or after ``change_index`` (None: missed)."""
        positions = np.arange(len(values), dtype=np.int64)
        state = self.detector.start()
        self.detector.advance(state, values[:change_index, None], positions[:change_index])
        after = self.detector.advance(state, values[change_index:, None], positions[change_index:])
        return after[0].first_ms if after else None

    def alarm_times_ms(self, state: SeriesState, values: np.ndarray, first_ms: int) -> list[int]:
        """Feed ``values`` into ``state``, 1 ms apart from ``first_ms``, a second (1,000 values)
        at a time as a consumer would: the first and last alarm of each second with alarms."""
        times: list[int] = []
        for begin in range(0, len(values), RATE_PER_S):
            batch = values[begin : begin + RATE_PER_S, None]
            batch_ms = np.arange(len(batch), dtype=np.int64) + first_ms + begin
            for alarm in self.detector.advance(state, batch, batch_ms):
                times += [alarm.first_ms, alarm.last_ms]
        return times

    def reports(self, alarm_times_ms: list[int]) -> int:
        """Alarms within the hold of the one before are one report of drift (a false alarm and
        the alarm that corrects it, say)."""
        if not alarm_times_ms:
            return 0
        return 1 + int(np.count_nonzero(np.diff(alarm_times_ms) > self.detector.policy.hold_ms))


class SequentialRun:
    """driftline's sequential test on every numeric feature of a reference, fed a batch at a
    time as the consumer feeds it; remembers each feature's first alarm after ``from_ms`` and
    the net shift of its alarms since (what the alarm episode reports as ``shift_sd``)."""

    def __init__(self, reference: Reference, from_ms: int) -> None:
        self.detector = SequentialDetector.for_features(reference.features, SequentialPolicy())
        self.columns = [int(name[1:]) for name in self.detector.names]
        self.state = self.detector.start()
        self.from_ms = from_ms
        self.first: dict[str, int] = {}
        self.net_shift_sd: dict[str, float] = {}
        self.alarms_before = 0

    def feed(self, values: np.ndarray, times_ms: np.ndarray) -> None:
        """One batch; it must not straddle ``from_ms``."""
        for alarm in self.detector.advance(self.state, values[:, self.columns], times_ms):
            if alarm.first_ms >= self.from_ms:
                self.first.setdefault(alarm.field, alarm.first_ms)
                self.net_shift_sd[alarm.field] = (
                    self.net_shift_sd.get(alarm.field, 0.0) + alarm.shift_sd
                )
            else:
                self.alarms_before += alarm.count


def delay_frontier(seed: int, trials: int = 100) -> dict[str, Any]:
    """ADWIN against the optimal detector held to one false alarm a day and the sequential
    candidate, over ``trials`` seeded streams per shift size (one value stream: a minute of
    N(0, 1), then the shift): the scenarios above draw each delay once, this says whether the gap
    is more than luck."""
    frontier: dict[str, Any] = {}
    before = 60 * RATE_PER_S
    sequential = SequentialCalibration.fitted(np.random.default_rng(seed - 1).normal(0, 1, 200_000))
    for shift_sd in (0.25, 0.5, 1.0):
        rng = np.random.default_rng(seed)
        delays: dict[str, list[float]] = {"adwin": [], "optimal": [], "sequential": []}
        for _ in range(trials):
            column = np.concatenate(
                [rng.normal(0, 1, before), rng.normal(shift_sd, 1, 20 * RATE_PER_S)]
            )
            found = {
                "adwin": run_river(lambda: river_drift.ADWIN(), column.tolist(), before)[0],
                "optimal": optimal_cusum(column, shift_sd, before)[0],
                "sequential": sequential.first_alarm(column, before),
            }
            for name, index in found.items():
                delays[name].append(np.nan if index is None else index - before + 1)
        frontier[f"{shift_sd:g}sigma"] = {
            name: {
                "missed": int(np.isnan(found).sum()),
                **(
                    {
                        "delay_events_mean": round(float(np.nanmean(found)), 1),
                        "delay_events_median": float(np.nanmedian(found)),
                        "delay_events_max": float(np.nanmax(found)),
                    }
                    if not np.isnan(found).all()
                    else {}
                ),
            }
            for name, found in ((name, np.array(found)) for name, found in delays.items())
        }
    return {
        "trials": trials,
        "sequential_thresholds": sequential.thresholds,
        "by_shift": frontier,
    }


# Pooling the features' evidence: Liu, Zhang and Mei's sum-shrinkage of local CUSUMs ("Scalable
# SUM-Shrinkage Schemes for Distributed Monitoring Large-Scale Data Streams", Statistica Sinica
# 2019). Each feature's CUSUM counts toward the model's sum only above the floor, so the 15 or 19
# quiet features add little noise and a shift in several features adds up.
POOLING_FLOOR = 4.0


@dataclass(frozen=True)
class FeatureStreams:
    """20 N(0, 1) features, every two correlated ``correlation`` (as features computed from the
    same input are). ``adjusted``: the detectors see each feature's residual on the others, in
    sd (Hawkins's regression adjustment, 1991), as they could if the reference kept the
    features' correlation."""

    correlation: float
    adjusted: bool = False

    @property
    def name(self) -> str:
        if not self.correlation:
            return "independent"
        return f"correlation_{self.correlation:g}" + ("_adjusted" if self.adjusted else "")

    @functools.cached_property
    def adjustment(self) -> np.ndarray:
        """The matrix that takes values to residuals in sd: the inverse correlation, each row
        divided by the square root of its diagonal (the residual's precision)."""
        correlations = np.full((FEATURES, FEATURES), self.correlation)
        np.fill_diagonal(correlations, 1.0)
        precision = np.linalg.inv(correlations)
        return np.asarray(precision / np.sqrt(np.diag(precision))[:, None])

    def draw(self, rng: np.random.Generator, values: int) -> np.ndarray:
        """Values as produced (features x values), before the detectors see them."""
        drawn = rng.standard_normal((FEATURES, values))
        if self.correlation:
            drawn *= math.sqrt(1 - self.correlation)
            drawn += math.sqrt(self.correlation) * rng.standard_normal(values)
        return drawn

    def seen(self, drawn: np.ndarray) -> np.ndarray:
        return np.asarray(self.adjustment @ drawn) if self.adjusted else drawn

    def shift_seen(self, shift_sd: float) -> float:
        """A lone feature's shift as the detectors see it: adjusted, larger by the square root of
        its precision, since the others explain part of its noise and none of its shift."""
        return shift_sd * float(self.adjustment[0, 0]) if self.adjusted else shift_sd


def cusum_paths(values: np.ndarray, shift_sd: float, levels: np.ndarray) -> np.ndarray:
    """Every value's Page CUSUM of the log-likelihood ratio of N(0, 1) against N(``shift_sd``, 1),
    per feature (``values``: features x values), from ``levels``: the product's recursion
    (``cusum_statistics``) for one test."""
    slopes, offsets = np.array([shift_sd]), np.array([shift_sd**2 / 2])
    return cusum_statistics(values, slopes, offsets, levels[:, None])[:, 0, :]


@dataclass(frozen=True)
class PooledCusum:
    """The sum over features of (CUSUM - ``POOLING_FLOOR``)+, alarming at ``threshold``; like
    ``optimal_cusum``, each CUSUM knows the shift (``shift_sd``, as a lone feature's shift is
    seen) and its direction. An alarm names the features whose CUSUM is above the floor, and
    restarts every CUSUM."""

    shift_sd: float
    threshold: float

    @staticmethod
    def pooled(cusums: np.ndarray) -> np.ndarray:
        """The sum over features (rows) of each value's (CUSUM - ``POOLING_FLOOR``)+."""
        return np.asarray(np.maximum(cusums - POOLING_FLOOR, 0.0).sum(axis=0))

    @classmethod
    def null_maxima(
        cls,
        rng: np.random.Generator,
        shift_sd: float,
        streams: FeatureStreams,
        paths: int,
        values: int,
    ) -> np.ndarray:
        """The sum's highest value on each of ``paths`` streams of ``values`` values without a
        change, every CUSUM from 0."""
        highest = np.zeros(paths)
        for path in range(paths):
            levels = np.zeros(FEATURES)
            for begin in range(0, values, 4_096):
                drawn = streams.draw(rng, min(4_096, values - begin))
                cusums = cusum_paths(streams.seen(drawn), shift_sd, levels)
                levels = cusums[:, -1]
                highest[path] = max(highest[path], float(cls.pooled(cusums).max()))
        return highest

    @classmethod
    def calibrated(cls, maxima: np.ndarray, values: int, shift_sd: float) -> PooledCusum:
        """The threshold for one false alarm a day at 1,000 events/s, from ``null_maxima``: a
        stream of ``values`` values crosses it with chance ``values`` / 86.4 million. That chance
        lies beyond the simulated streams, so the log of the maxima's tail, straight at those
        heights (the tail of a CUSUM is exponential), is fitted where ten or more streams cross
        and the chance is 30 % or less, and extended. The tail steepens with height, so the
        threshold errs high: fewer false alarms than the budget, longer delays."""
        descending = np.sort(maxima)[::-1]
        chance = np.arange(1, len(descending) + 1) / len(descending)
        fitted = (chance <= 0.3) & (np.arange(1, len(descending) + 1) >= 10)
        slope, intercept = np.polyfit(descending[fitted], np.log(chance[fitted]), 1)
        target = values / (RATE_PER_S * DAY_S)
        return cls(shift_sd, float((math.log(target) - intercept) / slope))

    def false_alarms_per_day(self, maxima: np.ndarray, values: int) -> float:
        """Alarms a day at 1,000 events/s on the streams of ``null_maxima`` (Poisson: a stream
        crosses with chance 1 - e^(-rate x its length))."""
        crossed = float(np.mean(maxima >= self.threshold))
        return -math.log1p(-min(crossed, 1 - 1e-9)) * RATE_PER_S * DAY_S / values

    def first_alarm(
        self, values: np.ndarray, changed: int, change_index: int
    ) -> tuple[int | None, int, int, int]:
        """On ``values`` (features x values; the first ``changed`` features shift at
        ``change_index``): the first alarm at or after ``change_index`` (None: missed), how many
        changed and unchanged features it names, and the alarms before it."""
        alarms_before, origin = 0, 0
        while True:
            cusums = cusum_paths(values[:, origin:], self.shift_sd, np.zeros(FEATURES))
            crossings = np.flatnonzero(self.pooled(cusums) >= self.threshold)
            if not len(crossings):
                return None, 0, 0, alarms_before
            position = int(crossings[0])
            if origin + position >= change_index:
                named = cusums[:, position] > POOLING_FLOOR
                return (
                    origin + position,
                    int(named[:changed].sum()),
                    int(named[changed:].sum()),
                    alarms_before,
                )
            alarms_before, origin = alarms_before + 1, origin + position + 1


def pooled_frontier(seed: int, trials: int, calibration_paths: int) -> dict[str, Any]:
    """The model's first alarm when 5 (or 1) of 20 features shift, on ``trials`` seeded streams
    per shift size (a minute without change, then 20 s with it): ``PooledCusum`` against the
    optimal per-feature detector on each changed feature (and, on independent features, ADWIN).
    Three settings: independent features; every two features correlated 0.3, with the pooled
    sum's false alarms a day at the threshold fitted for independent features and its delays at
    one fitted for the correlation; and the same correlation with each feature adjusted for the
    others."""
    before, after = 60 * RATE_PER_S, 20 * RATE_PER_S
    calibration_values = 40_960
    rng = np.random.default_rng(seed)
    by_shift: dict[str, Any] = {}

    def first_delay(alarms: list[int | None]) -> float:
        """Events from the change to the first of ``alarms`` (NaN: none)."""
        first = min((index for index in alarms if index is not None), default=None)
        return np.nan if first is None else first - before + 1

    def summary(delays: list[float]) -> dict[str, Any]:
        found = np.array(delays, dtype=np.float64)
        if np.isnan(found).all():
            return {"missed": len(found)}
        return {
            "missed": int(np.isnan(found).sum()),
            "delay_events_mean": round(float(np.nanmean(found)), 1),
            "delay_events_max": float(np.nanmax(found)),
        }

    settings = (FeatureStreams(0.0), FeatureStreams(0.3), FeatureStreams(0.3, adjusted=True))
    for shift_sd in (0.25, 0.5, 1.0):
        results: dict[str, Any] = {}
        independent: PooledCusum | None = None
        for streams in settings:
            seen_sd = streams.shift_seen(shift_sd)
            maxima = PooledCusum.null_maxima(
                rng, seen_sd, streams, calibration_paths, calibration_values
            )
            pooled = PooledCusum.calibrated(maxima, calibration_values, seen_sd)
            setting: dict[str, Any] = {"pooled_threshold": round(pooled.threshold, 2)}
            if independent is None:
                independent = pooled
            elif not streams.adjusted:
                setting["pooled_false_alarms_per_day_at_the_independent_threshold"] = round(
                    independent.false_alarms_per_day(maxima, calibration_values), 1
                )
            # Unadjusted, a feature looks the same whatever the others do: the per-feature
            # detectors' delays on correlated features are those on independent ones.
            per_feature = streams.adjusted or not streams.correlation
            for changed in (5, 1):
                delays: dict[str, list[float]] = {"pooled": []}
                if per_feature:
                    delays["optimal_per_feature"] = []
                if not streams.correlation:
                    delays["adwin"] = []
                named_changed, named_unchanged, pooled_before = [], [], 0
                for _ in range(trials):
                    drawn = streams.draw(rng, before + after)
                    drawn[:changed, before:] += shift_sd
                    values = streams.seen(drawn)
                    index, changed_named, unchanged_named, alarms_before = pooled.first_alarm(
                        values, changed, before
                    )
                    delays["pooled"].append(first_delay([index]))
                    named_changed.append(changed_named)
                    named_unchanged.append(unchanged_named)
                    pooled_before += alarms_before
                    # Per-feature detectors: the model's first alarm is its changed features' first.
                    if per_feature:
                        delays["optimal_per_feature"].append(
                            first_delay(
                                [
                                    optimal_cusum(column, seen_sd, before)[0]
                                    for column in values[:changed]
                                ]
                            )
                        )
                    if not streams.correlation:
                        delays["adwin"].append(
                            first_delay(
                                [
                                    run_river(river_drift.ADWIN, column.tolist(), before)[0]
                                    for column in values[:changed]
                                ]
                            )
                        )
                setting[f"{changed}of{FEATURES}"] = {
                    **{name: summary(found) for name, found in delays.items()},
                    "pooled_names_changed_mean": round(float(np.mean(named_changed)), 2),
                    "pooled_names_unchanged_mean": round(float(np.mean(named_unchanged)), 2),
                    "pooled_alarms_before_change": pooled_before,
                }
            results[streams.name] = setting
        by_shift[f"{shift_sd:g}sigma"] = results
    return {
        "trials": trials,
        "pooling_floor": POOLING_FLOOR,
        "calibration": f"{calibration_paths} streams of {calibration_values} values per setting",
        "by_shift": by_shift,
    }


def autocorrelated(phi: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    """N(0, 1) values each correlated ``phi`` with the one before, as sessions and bursts of one
    client make neighbouring events alike."""
    return lambda rng, size: np.asarray(
        signal.lfilter([math.sqrt(1 - phi**2)], [1, -phi], rng.standard_normal(size))
    )


STATIONARY_STREAMS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, size: rng.standard_normal(size),
    "lognormal": lambda rng, size: rng.lognormal(0, 1, size),
    "poisson_2": lambda rng, size: rng.poisson(2, size).astype(np.float64),
    "binary_10_percent": lambda rng, size: (rng.random(size) < 0.1).astype(np.float64),
    "autocorrelated_0.1": autocorrelated(0.1),
    "autocorrelated_0.3": autocorrelated(0.3),
}


class _PolicyTrafficDetector(SequentialDetector):
    """The sequential detector as it was before it measured traffic: thresholds for the
    policy's ``events_per_second`` whatever the series' traffic."""

    def traffic_level(self, state: SeriesState) -> int:
        return 0


def sequential_false_reports_by_traffic(seed: int) -> dict[str, Any]:
    """False reports of one N(0, 1) feature, with a budget of one false alarm per 20,000 values
    at the policy's traffic (1 event/s), when the values come 1, 10 and 100 times as fast (2
    million values, 23 and 2.3 days; 20 million, 2.3 days): per simulated day, with thresholds
    at the measured traffic (driftline's) and at the policy's throughout. Reports are alarm
    episodes (alarms within the hold of each other)."""
    rng = np.random.default_rng(seed)
    reference = SequentialReference.fit(rng.standard_normal(200_000))
    assert reference is not None
    policy = SequentialPolicy(false_alarms_per_day=DAY_S / 20_000, events_per_second=1.0)
    detectors = {
        "measured_traffic": SequentialDetector([reference], policy, names=["x"]),
        "policy_traffic": _PolicyTrafficDetector([reference], policy, names=["x"]),
    }
    results: dict[str, Any] = {"budget_per_day": policy.false_alarms_per_day}
    for multiple, values in ((1, 2_000_000), (10, 2_000_000), (100, 20_000_000)):
        stream = rng.standard_normal(values)
        spacing_ms = 1_000 // multiple
        days = values * spacing_ms / 1000 / DAY_S
        found: dict[str, Any] = {"values": values, "days": round(days, 3)}
        for name, detector in detectors.items():
            state, times_ms = detector.start(), []
            for begin in range(0, values, 10_000):
                batch = stream[begin : begin + 10_000, None]
                batch_ms = (np.arange(len(batch), dtype=np.int64) + begin) * spacing_ms
                for alarm in detector.advance(state, batch, batch_ms):
                    times_ms += [alarm.first_ms, alarm.last_ms]
            reports = SequentialCalibration(detector).reports(times_ms)
            found[name] = {
                "false_reports": reports,
                "per_day": round(reports / days, 2),
                "traffic_level_at_end": state.level,
            }
        results[f"{multiple}x"] = found
    return results


def sequential_false_alarms(seed: int, hours: float) -> dict[str, Any]:
    """The sequential candidate on streams without a change, each with a reference sample of
    200,000 events drawn the same way: false reports of drift (alarms within the hold of each
    other are one) a day over 20 such features, with the Gaussian thresholds and with thresholds
    fitted to the sample. The seasonal stream is feature f0 of the seasonal day (``hours`` of it,
    drawn in 2-hour pieces to bound memory, one detector state throughout); the others last 2
    hours."""
    rng = np.random.default_rng(seed)
    piece_s = 2 * 3600

    def seasonal_piece(start_s: int) -> np.ndarray:
        seconds = np.arange(start_s, min(start_s + piece_s, int(hours * 3600)))
        arrivals = np.repeat(seconds, rng.poisson(seasonal_rate(seconds))).astype(np.float64)
        return np.asarray(
            rng.standard_normal(len(arrivals)) + seasonal_mean(arrivals, features=1)[:, 0]
        )

    def one_piece(
        make: Callable[[np.random.Generator, int], np.ndarray],
    ) -> Callable[[], Iterator[np.ndarray]]:
        return lambda: iter([make(rng, piece_s * RATE_PER_S)])

    streams: dict[str, tuple[np.ndarray, Callable[[], Iterator[np.ndarray]]]] = {
        name: (make(rng, 200_000), one_piece(make)) for name, make in STATIONARY_STREAMS.items()
    }
    # The reference sample: 200,000 events in a row (about 200 s) at midnight of another day.
    streams["seasonal_day"] = (
        seasonal_piece(0)[:200_000],
        lambda: (seasonal_piece(start_s) for start_s in range(0, int(hours * 3600), piece_s)),
    )
    results: dict[str, Any] = {}
    for name, (sample, pieces) in streams.items():
        calibrations = {
            "gaussian_thresholds": SequentialCalibration.gaussian(sample),
            "fitted_thresholds": SequentialCalibration.fitted(sample),
        }
        states = {key: calibration.detector.start() for key, calibration in calibrations.items()}
        alarm_times_ms: dict[str, list[int]] = {key: [] for key in calibrations}
        events = 0
        for values in pieces():
            for key, calibration in calibrations.items():
                alarm_times_ms[key] += calibration.alarm_times_ms(states[key], values, events)
            events += len(values)
        results[name] = {"events": events}
        for key, calibration in calibrations.items():
            reports = calibration.reports(alarm_times_ms[key])
            results[name][key] = {
                "false_reports": reports,
                "false_alarms_per_day_20_features": round(
                    reports * FEATURES * RATE_PER_S * DAY_S / events, 1
                ),
                "thresholds": calibration.thresholds,
            }
    return results


def summarise_delays(delays_s: list[float | None], changed: int) -> dict[str, Any]:
    found = [d for d in delays_s if d is not None]
    return {
        "detected": len(found),
        "missed": changed - len(found),
        "delay_s_mean": round(float(np.mean(found)), 3) if found else None,
        "delay_s_max": round(float(np.max(found)), 3) if found else None,
        "delay_events_mean": round(float(np.mean(found)) * RATE_PER_S) if found else None,
    }


def change_scenario(
    scenario: Scenario,
    config: Config,
    seed: int,
    river_warmup_s: float,
    references: dict[bool, Reference],
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    tick_s = config.evaluator.tick_seconds
    if scenario.categorical not in references:
        # 100,000 events of the scenario before its change; the numeric scenarios share one.
        references[scenario.categorical] = build_reference(
            draw(scenario, np.zeros(100_000), np.random.default_rng(seed + 1_000)),
            scenario.categorical,
            config.monitoring.confidence_bins,
        )
    run = DriftlineRun(config, references[scenario.categorical])
    change_ms = START_MS + int(scenario.change_s * 1000)
    # The consumer's sequential test (numeric features only), fed each tick's events as one
    # batch, cut at the change.
    sequential = (
        None if scenario.categorical else SequentialRun(references[scenario.categorical], change_ms)
    )
    chunk = int(RATE_PER_S * tick_s)
    river_from = int((scenario.change_s - river_warmup_s) * RATE_PER_S)
    river_values: list[np.ndarray] = []
    for tick in range(int(scenario.duration_s / tick_s)):
        seconds = (tick * tick_s) + np.arange(chunk) / RATE_PER_S
        values = draw(scenario, seconds, rng)
        if sequential is not None:
            times_ms = START_MS + np.round(seconds * 1000).astype(np.int64)
            cut = int(np.searchsorted(times_ms, change_ms))
            for part in (slice(0, cut), slice(cut, chunk)):
                if part.start != part.stop:
                    sequential.feed(values[part], times_ms[part])
        run.feed(
            START_MS + int(tick * tick_s * 1000),
            run.bin_counts(values, scenario.categorical),
            chunk,
        )
        if (tick + 1) * chunk > river_from:
            river_values.append(values[:, list(scenario.changed)])
    windows_first = run.first_alarms()
    sequential_first = {} if sequential is None else sequential.first
    first = {
        name: min(at for at in (windows_first.get(name), sequential_first.get(name)) if at)
        for name in windows_first.keys() | sequential_first.keys()
    }
    changed_names = {f"f{i}" for i in scenario.changed}
    result: dict[str, Any] = {"description": scenario.description}

    def delays(found: dict[str, int]) -> list[float | None]:
        return [
            (found[name] - change_ms) / 1000 if name in found else None
            for name in sorted(changed_names)
        ]

    result["driftline"] = {
        **summarise_delays(delays(first), len(changed_names)),
        "false_alarms": sum(1 for name in first if name not in changed_names),
        "alarms_before_change": sum(1 for at in windows_first.values() if at <= change_ms)
        + (0 if sequential is None else sequential.alarms_before),
        "tick_ms_mean": round(run.tick_seconds / run.ticks * 1000, 2),
    }
    result["driftline_windows_only"] = summarise_delays(delays(windows_first), len(changed_names))
    if sequential is not None:
        # Dated at the crossing event; the evaluator reports it at its next tick.
        reported = {
            name: -(-at // run.tick_ms) * run.tick_ms for name, at in sequential_first.items()
        }
        # At the end of the scenario: the net shift of each changed feature's alarms, the size
        # of its lasting shift to the nearest 0.25 sd; any other feature's nets about 0.
        net = sequential.net_shift_sd
        result["driftline_sequential_test"] = {
            **summarise_delays(delays(sequential_first), len(changed_names)),
            "reported_at_next_tick": summarise_delays(delays(reported), len(changed_names)),
            "net_shift_sd_of_changed": [net.get(name) for name in sorted(changed_names)],
            "net_shift_sd_of_others": sorted(
                shift for name, shift in net.items() if name not in changed_names
            ),
        }

    river = np.concatenate(river_values)[-(int(scenario.duration_s * RATE_PER_S) - river_from) :]
    change_index = int(river_warmup_s * RATE_PER_S)
    for name, make in (
        ("adwin", lambda: river_drift.ADWIN()),
        ("kswin", lambda: river_drift.KSWIN(seed=seed)),
    ):
        found: list[float | None] = []
        early = 0
        for column_index in range(len(scenario.changed)):
            # ADWIN gets a minute before the change; KSWIN, at ~0.4 ms an update, one second
            # (ten windows of its 100 values) and two minutes after.
            begin = 0 if name == "adwin" else change_index - RATE_PER_S
            end = len(river) if name == "adwin" else change_index + 120 * RATE_PER_S
            column = river[begin:end, column_index].tolist()
            index, before = run_river(make, column, change_index - begin)
            early += before
            found.append(
                None if index is None else (index - (change_index - begin) + 1) / RATE_PER_S
            )
        result[name] = {
            **summarise_delays(found, len(scenario.changed)),
            "alarms_before_change_on_changed_features": early,
        }
    if scenario.shift_sd:
        found, early = [], 0
        for column_index in range(len(scenario.changed)):
            index, before = optimal_cusum(river[:, column_index], scenario.shift_sd, change_index)
            early += before
            found.append(None if index is None else (index - change_index + 1) / RATE_PER_S)
        result["optimal_at_1_false_alarm_per_day"] = {
            **summarise_delays(found, len(scenario.changed)),
            "alarms_before_change_on_changed_features": early,
            "threshold": round(optimal_cusum_threshold(scenario.shift_sd, ONE_A_DAY_RUN_LENGTH), 2),
        }
    return result


def seasonal_reference(config: Config, seed: int) -> Reference:
    """100,000 events spread over the whole day as the traffic is (the same for every part)."""
    rng = np.random.default_rng(seed)
    moments = rng.uniform(0, DAY_S, 400_000)
    keep = rng.random(400_000) < seasonal_rate(moments) / (1.5 * RATE_PER_S)
    moments = moments[keep][:100_000]
    values = rng.standard_normal((len(moments), FEATURES)) + seasonal_mean(moments)
    return build_reference(values, False, config.monitoring.confidence_bins)


def driftline_day_part(
    seed: int,
    start_s: float,
    end_s: float,
    count_from_s: float,
    low_traffic_per_s: float | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """driftline over ``[start_s, end_s)`` of the seasonal day, counting alarms from
    ``count_from_s`` (a part that starts later warms its windows up for one long window first).
    ``low_traffic_per_s``: a stationary day at that rate instead, without seasonality.
    ``settings``: the config, as a mapping (defaults when empty). Runs in a worker process."""
    config = parse_config(settings or {})
    if low_traffic_per_s is None:
        reference = seasonal_reference(config, seed)
    else:
        reference = build_reference(
            np.random.default_rng(seed).standard_normal((100_000, FEATURES)),
            False,
            config.monitoring.confidence_bins,
        )
    rng = np.random.default_rng(seed + int(start_s))
    tick_s = config.evaluator.tick_seconds
    run = DriftlineRun(config, reference)
    edges = [np.asarray(f.edges) for f in reference.features]
    columns = [int(f.name[1:]) for f in reference.features]
    events_total = 0
    first_tick = int(start_s / tick_s)
    for tick in range(first_tick, int(end_s / tick_s)):
        middle = np.array([tick * tick_s + tick_s / 2])
        if low_traffic_per_s is None:
            events = int(rng.poisson(seasonal_rate(middle)[0] * tick_s))
            means = seasonal_mean(middle)[0]
        else:
            events = int(rng.poisson(low_traffic_per_s * tick_s))
            means = np.zeros(FEATURES)
        width = max(len(edge) for edge in edges) + 2
        counts = np.zeros((FEATURES, width), dtype=np.int64)
        for index, edge in enumerate(edges):
            cdf = stats.norm.cdf(edge - means[columns[index]])
            # missing, underflow, quantile bins ([e_i, e_i+1), the last one closed), overflow
            p = np.concatenate([[0.0, cdf[0]], np.diff(cdf), [1 - cdf[-1]]])
            counts[index, : len(p)] = rng.multinomial(events, p / p.sum())
        run.feed(START_MS + int(tick * tick_s * 1000), counts, events)
        if tick * tick_s >= count_from_s:
            events_total += events
    counted_from_ms = START_MS + int(count_from_s * 1000)
    alarms = [t for t in run.transitions if t.state == "drifted" and t.at_ms > counted_from_ms]
    by_window: dict[str, int] = {}
    for alarm in alarms:
        by_window[alarm.window] = by_window.get(alarm.window, 0) + 1
    return {
        "alarms": len(alarms),
        "alarms_by_window": by_window,
        "events": events_total,
        "ticks": sum(
            1 for tick in range(first_tick, int(end_s / tick_s)) if tick * tick_s >= count_from_s
        ),
        "tick_ms_mean": round(run.tick_seconds / run.ticks * 1000, 2),
    }


def river_day(
    make: Callable[[], Any], seed: int, events: int, seasonal: bool = True
) -> dict[str, Any]:
    """One River detector on feature f0 of the day (``events`` of it), scaled to 20 features
    and a whole day at 1,000 events/s."""
    rng = np.random.default_rng(seed)
    detector = make()
    alarms = 0
    elapsed = 0.0
    for first in range(0, events, 1_000_000):
        size = min(1_000_000, events - first)
        seconds = (first + np.arange(size)) / RATE_PER_S
        column = rng.standard_normal(size)
        if seasonal:
            column += seasonal_mean(seconds, features=1)[:, 0]
        started = time.perf_counter()
        for value in column.tolist():
            detector.update(value)
            alarms += detector.drift_detected
        elapsed += time.perf_counter() - started
    scale = FEATURES * (RATE_PER_S * DAY_S) / events
    return {
        "alarms_measured": alarms,
        "measured_events_one_feature": events,
        "false_alarms_per_day": round(alarms * scale, 1),
        "cost_per_update_us": round(elapsed / events * 1e6, 3),
    }


def tick_cost_ms(seed: int, ticks: int = 60) -> dict[str, float]:
    """One evaluator tick of the 20-feature model at 1,000 events/s with full windows, with and
    without the fast window: the best of three rounds of ``ticks`` each, interleaved, so the
    machine's load weighs on both alike."""
    runs = {}
    for name, fast_s in (("with_fast_window", 30), ("without_fast_window", 0)):
        config = parse_config({"drift": {"fast_window_seconds": fast_s}})
        reference = build_reference(
            np.random.default_rng(seed).standard_normal((100_000, FEATURES)),
            False,
            config.monitoring.confidence_bins,
        )
        run = DriftlineRun(config, reference)
        rng = np.random.default_rng(seed + 1)
        # Missing, underflow, the 20 quantile bins, overflow: the reference's own distribution.
        p = np.array([0.0, 0.0, *np.full(20, 1 / 20), 0.0])
        tick_s = config.evaluator.tick_seconds
        events = int(RATE_PER_S * tick_s)
        for tick in range(int((config.windows.long_seconds + 60) / tick_s)):
            at_ms = START_MS + int(tick * tick_s * 1000)
            run.feed(at_ms, rng.multinomial(events, p, size=FEATURES), events, tick=False)
        runs[name] = run
    best = dict.fromkeys(runs, math.inf)
    for _ in range(3):
        for name, run in runs.items():
            started = time.perf_counter()
            for _ in range(ticks):
                run.engine.tick(run.engine.now_ms)
            best[name] = min(best[name], (time.perf_counter() - started) / ticks * 1000)
    return {name: round(value, 2) for name, value in best.items()}


def driftline_cost_per_event(config: Config, seed: int, events: int) -> dict[str, Any]:
    """The whole embedded path from JSON lines: decode, assemble, bin, store, tick."""
    spec = TrafficSpec(MODEL, "v2", feature_count=FEATURES)
    reference_lines = [
        raw
        for raw, _ in synthetic_events(spec, 50_000, start_ms=START_MS, rate_per_s=1000, seed=seed)
    ]
    from driftline.events import decode_event

    builder = ReferenceBuilder(MODEL, confidence_bins=config.monitoring.confidence_bins)
    builder.add([e for e in map(decode_event, reference_lines) if isinstance(e, InferenceEvent)])
    reference = builder.build(created_at_ms=START_MS)
    lines = [
        raw
        for raw, _ in synthetic_events(
            spec, events, start_ms=START_MS, rate_per_s=RATE_PER_S, seed=seed + 1
        )
    ]
    engine = Backtest(config, [reference])
    started = time.perf_counter()
    summary = engine.replay(lines)
    elapsed = time.perf_counter() - started

    # The consumer's share of it: decode, assemble and bin batches of 5,000 (no store), with and
    # without the reference; the difference is what watching 20 features costs the hot path.
    binning = binning_from_config(config)
    now_ms = START_MS + events

    def consumer_us(binner: Reference | None, sequential: bool = False) -> float:
        store = MemoryWindowStore(engine.layout, clock=lambda: now_ms)
        assembler = BatchAssembler(config, store, lambda model: binner)
        policy = SequentialPolicy() if sequential else None
        writer = WindowWriter(store, binning, lambda model: binner, sequential=policy)
        best = math.inf
        for _ in range(3):
            begun = time.perf_counter()
            for first in range(0, len(lines), 5_000):
                batch = lines[first : first + 5_000]
                offsets = list(range(first, first + len(batch)))
                assembled = assembler.assemble([0] * len(batch), offsets, batch, now_ms)
                for model_batch in assembled.models.values():
                    writer.window_update(model_batch, now_ms)  # built, not applied
            best = min(best, time.perf_counter() - begun)
        return best / len(lines) * 1e6

    without, with_reference = consumer_us(None), consumer_us(reference)
    with_sequential = consumer_us(reference, sequential=True)
    return {
        "events": events,
        "ticks": summary.ticks,
        "cost_per_event_us": round(elapsed / events * 1e6, 2),
        "consumer_decode_and_bin_us_per_event": {
            "without_reference": round(without, 2),
            "with_reference_20_numeric_features": round(with_reference, 2),
            "with_reference_and_sequential_test": round(with_sequential, 2),
        },
        "note": "backtest from JSON lines, 20 numeric features + prediction + confidence, "
        "ticks included",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-hour day, no KSWIN day run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=None,
        help="evaluator tick in event time (default: the config's, 5 s); every scenario uses it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config setting for every scenario, e.g. windows.bucket_seconds=1 (repeatable)",
    )
    arguments = parser.parse_args()
    started = time.perf_counter()
    settings: dict[str, Any] = {}
    if arguments.tick_seconds is not None:
        settings["evaluator"] = {"tick_seconds": arguments.tick_seconds}
    for setting in arguments.set:
        key, _, value = setting.partition("=")
        *sections, name = key.split(".")
        section = settings
        for part in sections:
            section = section.setdefault(part, {})
        section[name] = yaml.safe_load(value)
    config = parse_config(settings)
    if config.evaluator.tick_seconds > config.windows.bucket_seconds:
        parser.error("each tick's events go into one bucket: the tick must not exceed a bucket")
    scenarios = [
        *(_abrupt(size, count) for size in (0.25, 0.5, 1.0) for count in (1, 5)),
        _gradual(),
        _variance(),
        _categorical(),
    ]
    # The simulated day, the longest part, runs in worker processes while the rest goes on here.
    hours_of_day = 2.0 if arguments.quick else 24.0
    pool = ProcessPoolExecutor(max_workers=2)
    half_s = hours_of_day * 3600 / 2
    warm_up_s = config.windows.long_seconds
    day_parts = [
        pool.submit(driftline_day_part, arguments.seed + 100, 0.0, half_s, 0.0, None, settings),
        pool.submit(
            driftline_day_part,
            arguments.seed + 100,
            half_s - warm_up_s,
            2 * half_s,
            half_s,
            None,
            settings,
        ),
    ]
    # A thin day: at 25 events/s the fast window holds 500 to 750 events, at minimum_samples.
    thin_days = {
        name: pool.submit(
            driftline_day_part,
            arguments.seed + 300,
            0.0,
            2 * half_s,
            0.0,
            LOW_TRAFFIC_PER_S,
            {**settings, "drift": {**settings.get("drift", {}), **drift}},
        )
        for name, drift in (
            ("defaults", {}),
            ("without_psi_noise_floor", {"psi_noise_tail_probability": None}),
        )
    }
    sequential_day = pool.submit(sequential_false_alarms, arguments.seed + 600, hours_of_day)
    results: dict[str, Any] = {}
    references: dict[bool, Reference] = {}
    for offset, scenario in enumerate(scenarios):
        results[scenario.name] = change_scenario(
            scenario, config, arguments.seed + offset, river_warmup_s=60, references=references
        )
        print(f"{scenario.name}: done at {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(f"change scenarios: done at {time.perf_counter() - started:.0f}s", file=sys.stderr)
    hours = 2.0 if arguments.quick else 24.0
    day_seed = arguments.seed + 100
    river: dict[str, Any] = {
        "adwin": river_day(lambda: river_drift.ADWIN(), day_seed, int(RATE_PER_S * hours * 3600)),
        "adwin_without_seasonality": river_day(
            lambda: river_drift.ADWIN(),
            day_seed,
            int(RATE_PER_S * min(hours, 2) * 3600),
            seasonal=False,
        ),
    }
    if not arguments.quick:
        river["kswin"] = river_day(lambda: river_drift.KSWIN(seed=day_seed), day_seed, 20_000)
        river["kswin"]["note"] = "first 20,000 events of the day only: KSWIN is too slow for a day"
    parts = [part.result() for part in day_parts]
    day_hours = sum(part["ticks"] for part in parts) * config.evaluator.tick_seconds / 3600
    results["seasonal_day"] = {
        "description": f"{hours:g} h without change, daily seasonality of rate and means",
        "driftline": {
            "alarms": sum(part["alarms"] for part in parts),
            "alarms_by_window": {
                window: sum(part["alarms_by_window"].get(window, 0) for part in parts)
                for window in ("fast", "short", "long")
            },
            "false_alarms_per_day": sum(part["alarms"] for part in parts) / (day_hours / 24),
            "simulated_hours": day_hours,
            "events": sum(part["events"] for part in parts),
            "ticks": sum(part["ticks"] for part in parts),
            "tick_ms_mean": round(float(np.mean([part["tick_ms_mean"] for part in parts])), 2),
            "note": "the day runs as two processes; the second warms up for one long window",
        },
        **river,
    }
    thin = {name: part.result() for name, part in thin_days.items()}
    thin_hours = 2 * half_s / 3600
    fast_s, bucket_s = config.drift.fast_window_seconds, config.windows.bucket_seconds
    fast_events = (LOW_TRAFFIC_PER_S * (fast_s - bucket_s), LOW_TRAFFIC_PER_S * fast_s)
    results["low_traffic_day"] = {
        "description": f"{thin_hours:g} h stationary at {LOW_TRAFFIC_PER_S:g} events/s: "
        + (
            f"the fast window holds {fast_events[0]:g}-{fast_events[1]:g} events "
            f"(minimum_samples {config.drift.minimum_samples})"
            if fast_s
            else "no fast window"
        ),
        **{
            name: {
                "alarms": part["alarms"],
                "alarms_by_window": part["alarms_by_window"],
                "false_alarms_per_day": round(part["alarms"] / (thin_hours / 24), 1),
                "tick_ms_mean": part["tick_ms_mean"],
            }
            for name, part in thin.items()
        },
    }
    sequential_streams = sequential_day.result()
    by_traffic = sequential_false_reports_by_traffic(arguments.seed + 700)
    pool.shutdown()
    print(f"seasonal_day: done at {time.perf_counter() - started:.0f}s", file=sys.stderr)
    frontier = delay_frontier(arguments.seed + 500)
    pooled = pooled_frontier(arguments.seed + 800, trials=100, calibration_paths=400)
    cost = driftline_cost_per_event(config, arguments.seed + 200, 50_000)
    tick_ms = tick_cost_ms(arguments.seed + 400)

    def delay_against_adwin(detector: str) -> dict[str, str]:
        verdicts = {}
        for name, result in results.items():
            if not name.startswith("abrupt_"):
                continue
            ours, theirs = result[detector], result["adwin"]
            worse = ours["missed"] > theirs["missed"] or (
                theirs["delay_s_max"] is not None
                and (ours["delay_s_max"] is None or ours["delay_s_max"] > theirs["delay_s_max"])
            )
            verdicts[name] = "no worse" if not worse else "worse"
        return verdicts

    abrupt_check = delay_against_adwin("driftline")
    day = results["seasonal_day"]
    output = {
        "bench": "detection",
        "quick": arguments.quick,
        "seed": arguments.seed,
        "settings": settings,
        "rate_per_s": RATE_PER_S,
        "features": FEATURES,
        "driftline_defaults": config.drift.model_dump(
            include={
                "statistic",
                "effect_size_statistic",
                "effect_size_threshold",
                "minimum_samples",
                "false_discovery_rate",
                "require_both_windows",
                "fast_window_seconds",
                "psi_noise_tail_probability",
            }
        ),
        "windows_s": {
            "fast": config.drift.fast_window_seconds,
            "short": config.windows.short_seconds,
            "long": config.windows.long_seconds,
            "bucket": config.windows.bucket_seconds,
            "tick": config.evaluator.tick_seconds,
        },
        "scenarios": results,
        "delay_frontier_at_1_false_alarm_per_day": frontier,
        "pooled_features_at_1_false_alarm_per_day": pooled,
        "sequential_test_without_change": sequential_streams,
        "sequential_test_by_traffic": by_traffic,
        "tick_ms_full_windows": tick_ms,
        "cost_per_event_us": {
            "driftline_backtest_path": cost["cost_per_event_us"],
            "driftline_consumer_decode_and_bin": cost["consumer_decode_and_bin_us_per_event"],
            "adwin_20_features": round(day["adwin"]["cost_per_update_us"] * FEATURES, 2),
            "kswin_20_features": (
                round(day["kswin"]["cost_per_update_us"] * FEATURES, 2) if "kswin" in day else None
            ),
        },
        "targets": {
            "driftline_false_alarms_per_day": day["driftline"]["false_alarms_per_day"],
            "at_most_1_false_alarm_per_day": day["driftline"]["false_alarms_per_day"] <= 1,
            "delay_vs_adwin_on_abrupt": abrupt_check,
            "no_worse_than_adwin_on_every_abrupt": all(
                v == "no worse" for v in abrupt_check.values()
            ),
            "windows_only_delay_vs_adwin_on_abrupt": delay_against_adwin("driftline_windows_only"),
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
