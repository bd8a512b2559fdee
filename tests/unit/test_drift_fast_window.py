"""The drift fast window (``drift.fast_window_seconds``) and the PSI noise floor.

The fast window is a third drift window, shorter than the short one and read from the same
buckets: it raises drift like the short window, under the same test and floor. The PSI floor of
any window rises where the window is thin (``drift.psi_noise_tail_probability``), so a thin fast
window cannot raise drift on sampling noise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from alerting import metric_names as names
from alerting.drift_figures import DriftFigures, DriftTransition
from alerting.evaluator import ModelWindows
from alerting.snapshot import Snapshot
from detectors.drift_decision import DriftPolicy, decide, psi_noise_floor
from detectors.drift_statistics import DriftStatistic, compute_statistics_by_feature
from detectors.reference import FeatureReference, Reference
from detectors.series import Series
from detectors.stores.memory_store import MemoryWindowStore
from detectors.window_summary import SeriesWindow
from detectors.window_update import PartitionRange, WindowUpdate, feature_metric
from driftline.backtest import Backtest
from driftline.cli import layout_from_config
from driftline.config import ConfigError, parse_config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.unit.test_drift_backtest import START_MS, build_reference

P_VALUE = DriftStatistic.CHI_SQUARE_P_VALUE
PSI = DriftStatistic.PSI
NAMES = ("a", "b", "c")
FloatArray = npt.NDArray[np.float64]


# --- configuration -------------------------------------------------------------------------------


def test_the_fast_window_is_30_seconds_by_default_and_in_the_layout() -> None:
    config = parse_config({})
    assert config.drift.fast_window_seconds == 30
    assert config.drift.psi_noise_tail_probability == 1e-9
    assert layout_from_config(config).fast_ms == 30_000
    assert layout_from_config(config).windows_ms == (30_000, 300_000, 3_600_000)


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ({"bucket_seconds": 1, "short_seconds": 20}, 0),  # shorter short window: off
        ({"bucket_seconds": 20, "short_seconds": 300}, 0),  # 30 s is not whole buckets: off
        ({"bucket_seconds": 5, "short_seconds": 60}, 30),
    ],
)
def test_the_default_fast_window_turns_itself_off_where_it_does_not_fit(
    windows: dict[str, int], expected: int
) -> None:
    config = parse_config({"windows": {"rollup_seconds": 60, **windows}})
    assert config.drift.fast_window_seconds == expected
    assert layout_from_config(config).fast_ms == expected * 1000


@pytest.mark.parametrize("seconds", [35, 300])
def test_a_set_fast_window_that_does_not_fit_is_turned_off(seconds: int) -> None:
    """Not whole buckets (35 s of 10 s buckets) or not shorter than the short window (300 s):
    off, so that a config written back with all its defaults loads under any windows."""
    config = parse_config({"drift": {"fast_window_seconds": seconds}})
    assert config.drift.fast_window_seconds == 0
    assert layout_from_config(config).fast_ms == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"drift": {"fast_window_seconds": -10}}, "drift.fast_window_seconds = -10"),
        ({"drift": {"psi_noise_tail_probability": 0}}, "drift.psi_noise_tail_probability = 0"),
    ],
)
def test_bad_drift_values_are_refused_naming_key_and_value(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert message in str(raised.value)


def test_zero_disables_the_fast_window() -> None:
    config = parse_config({"drift": {"fast_window_seconds": 0}})
    assert config.drift.fast_window_seconds == 0
    assert layout_from_config(config).windows_ms == (300_000, 3_600_000)


def test_buckets_live_as_long_as_the_fast_window_needs_when_the_short_one_reads_rollups() -> None:
    """With a 10-minute short window every window reads 60 s rollups; the 30 s fast window still
    reads 10 s buckets, which must outlive it."""
    config = parse_config({"windows": {"short_seconds": 600, "long_seconds": 3600}})
    layout = layout_from_config(config)
    assert layout.fast_ms == 30_000
    clock = [START_MS + 15_000]
    stores = {
        fast_ms: MemoryWindowStore(
            dataclasses.replace(layout, fast_ms=fast_ms), clock=lambda: clock[0]
        )
        for fast_ms in (0, 30_000)
    }
    for store in stores.values():
        assert store.layout.width_for(store.layout.short_ms) == 60_000
        update = WindowUpdate(
            model="m",
            ranges=[PartitionRange(0, 0, 9)],
            buckets={START_MS: {"v1|stable||events": 10}},
            totals={},
            newest_event_ms=START_MS,
        )
        store.apply(update)
    # 15 s after the bucket began: inside a 30 s window, past the 10 s a bucket would keep
    # for no window at all.
    read = {
        fast_ms: store.read_windows("m", [30_000], clock[0])[0] for fast_ms, store in stores.items()
    }
    assert read == {0: {}, 30_000: {"v1|stable||events": 10}}


# --- decisions -----------------------------------------------------------------------------------


def window(p_values: list[float], psi: list[float]) -> dict[DriftStatistic, FloatArray]:
    return {P_VALUE: np.array(p_values), PSI: np.array(psi)}


def samples(*counts: int) -> npt.NDArray[np.int64]:
    return np.array(counts, dtype=np.int64)


DRIFTING = window([1e-9, 1e-9, 1e-9], [0.5, 0.5, 0.5])
QUIET = window([0.6, 0.6, 0.6], [0.01, 0.01, 0.01])
ENOUGH = samples(1000, 1000, 1000)


def test_the_fast_window_alone_raises_drift_when_either_window_may() -> None:
    either = DriftPolicy(require_both_windows=False)
    decision = decide(
        either, NAMES, QUIET, QUIET, ENOUGH, ENOUGH, statistics_fast=DRIFTING, samples_fast=ENOUGH
    )
    assert decision.drifted.tolist() == [True, True, True]
    assert {name: v.tolist() for name, v in decision.window_drifted.items()} == {
        "fast": [True, True, True],
        "short": [False, False, False],
        "long": [False, False, False],
    }
    assert list(decision.window_drifted) == ["fast", "short", "long"]
    assert decision.statistics_fast is not None
    assert decision.statistics_fast[PSI].tolist() == [0.5, 0.5, 0.5]


def test_with_both_windows_required_the_fast_window_stands_in_for_the_short_one() -> None:
    both = DriftPolicy(require_both_windows=True)
    fast_and_long = decide(
        both, NAMES, QUIET, DRIFTING, ENOUGH, ENOUGH, statistics_fast=DRIFTING, samples_fast=ENOUGH
    )
    assert fast_and_long.drifted.tolist() == [True, True, True]
    fast_alone = decide(
        both, NAMES, QUIET, QUIET, ENOUGH, ENOUGH, statistics_fast=DRIFTING, samples_fast=ENOUGH
    )
    assert fast_alone.drifted.tolist() == [False, False, False]


def test_a_thin_fast_window_is_no_data_and_never_raises() -> None:
    decision = decide(
        DriftPolicy(require_both_windows=False),
        NAMES,
        QUIET,
        QUIET,
        samples(499, 1000, 0),
        samples(499, 1000, 0),
        statistics_fast=DRIFTING,
        samples_fast=samples(499, 500, 0),
    )
    assert decision.window_drifted["fast"].tolist() == [False, True, False]
    assert decision.drifted.tolist() == [False, True, False]
    assert decision.nodata.tolist() == [True, False, True]


def test_optional_arguments_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="statistics_fast and samples_fast go together"):
        decide(DriftPolicy(), NAMES, QUIET, QUIET, ENOUGH, ENOUGH, statistics_fast=QUIET)
    with pytest.raises(ValueError, match="reference_samples and reference_bins go together"):
        decide(DriftPolicy(), NAMES, QUIET, QUIET, ENOUGH, ENOUGH, reference_samples=ENOUGH)
    with pytest.raises(ValueError, match="psi_noise_tail_probability must be in"):
        DriftPolicy(psi_noise_tail_probability=1.0)


# --- the PSI noise floor -------------------------------------------------------------------------


def test_the_noise_floor_is_the_chi_square_quantile_over_the_effective_sample_size() -> None:
    window_samples = samples(500, 2_000, 30_000, 0)
    reference_samples = samples(50_000, 50_000, 100_000, 50_000)
    bins = samples(20, 12, 22, 20)
    floor = psi_noise_floor(1e-9, window_samples, reference_samples, bins)
    expected = stats.chi2.isf(1e-9, bins[:3] - 1) * (
        1 / window_samples[:3] + 1 / reference_samples[:3]
    )
    assert floor[:3].tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert math.isinf(floor[3])  # an empty window never gets past it
    # One occupied reference bin: no degrees of freedom, no noise floor.
    assert psi_noise_floor(1e-9, samples(500), samples(100), samples(1)).tolist() == [0.0]


def test_stationary_thin_windows_pass_the_fixed_floor_but_never_the_noise_floor() -> None:
    """100,000 windows of 500 draws from the reference's own distribution (20 equal-mass bins,
    a 50,000-sample reference): sampling noise alone carries some past PSI 0.1, none past the
    noise floor of a 500-sample window."""
    rng = np.random.default_rng(5)
    probabilities = np.full(20, 1 / 20)
    reference = rng.multinomial(50_000, probabilities)
    windows = rng.multinomial(500, probabilities, size=100_000)
    psi = compute_statistics_by_feature(
        np.tile(reference, (len(windows), 1)),
        windows,
        ordered=False,
        bin_values=None,
        reference_spreads=None,
    )[PSI]
    [floor] = psi_noise_floor(1e-9, samples(500), samples(50_000), samples(20)).tolist()
    assert round(floor, 3) == 0.165
    # 1 in 4,000; a 30 s window is fresh 2,880 times a day
    assert int(np.count_nonzero(psi >= 0.1)) == 26
    assert round(float(psi.max()), 3) == 0.134


def test_the_noise_floor_holds_back_a_drift_in_a_thin_window_only() -> None:
    statistics = window([1e-9, 1e-9, 1e-9], [0.12, 0.12, 0.12])
    thin_and_wide = samples(500, 1_000, 5_000)
    reference_samples, bins = samples(50_000, 50_000, 50_000), samples(20, 20, 20)

    def drifted(policy: DriftPolicy) -> list[bool]:
        decision = decide(
            policy,
            NAMES,
            statistics,
            statistics,
            thin_and_wide,
            thin_and_wide,
            reference_samples=reference_samples,
            reference_bins=bins,
        )
        return [bool(value) for value in decision.drifted.tolist()]

    # Floors: 0.165 at 500 samples, 0.083 at 1,000, 0.017 at 5,000 (then the fixed 0.1).
    assert drifted(DriftPolicy()) == [False, True, True]
    assert drifted(DriftPolicy(psi_noise_tail_probability=None)) == [True, True, True]
    # Another distance than PSI keeps its fixed threshold.
    hellinger = DriftPolicy(
        statistic=DriftStatistic.HELLINGER, threshold=0.1, effect_size_statistic=None
    )
    hellinger_statistics = {DriftStatistic.HELLINGER: np.array([0.12, 0.12, 0.12])}
    decision = decide(
        hellinger,
        NAMES,
        hellinger_statistics,
        hellinger_statistics,
        thin_and_wide,
        thin_and_wide,
        reference_samples=reference_samples,
        reference_bins=bins,
    )
    assert decision.drifted.tolist() == [True, True, True]


# --- the drift contributor and the evaluator ------------------------------------------------------


def test_the_drift_contributor_reports_the_fast_window_and_names_it_in_transitions() -> None:
    counts = (0, 0, 250, 250, 250, 250, 0)  # missing, underflow, four bins, overflow
    item = FeatureReference.numeric(
        "x",
        edges=(-1.0, 0.0, 1.0, 2.0, 3.0),
        counts=counts,
        bin_values=(-2.0, -0.5, 0.5, 1.5, 2.5, 3.5),
        spread=1.0,
    )
    reference = Reference("m", 0, (item,))
    series = Series("v1", "stable")

    def series_window(histogram: tuple[int, ...]) -> dict[Series, SeriesWindow]:
        window = SeriesWindow(series)
        for index, value in enumerate(histogram):
            if value:
                window.histograms[feature_metric(reference.field_tag, "x")][index] = value
        window.counters["events"] = sum(histogram)
        return {series: window}

    usual = series_window(tuple(c * 40 for c in counts))  # 40,000 as the reference
    shifted = series_window((0, 0, 0, 0, 5_000, 5_000, 0))  # all in the upper half
    transitions: list[DriftTransition] = []
    figures = DriftFigures(
        parse_config({}).drift,
        {"m": reference}.get,
        confidence_bins=20,
        on_transition=transitions.append,
    )
    snapshot = Snapshot()
    figures.contribute(
        ModelWindows(
            "m", 5_000, {"short": usual, "long": usual}, {"short": 300, "long": 3600}, shifted
        ),
        snapshot,
    )
    labels = {"model": "m", "version": "v1", "deployment": "stable", "segment": "", "feature": "x"}
    assert snapshot.value(names.DRIFT_SAMPLES, **labels, window="fast") == 10_000
    assert snapshot.value(names.DRIFT_SAMPLES, **labels, window="short") == 40_000
    # PSI with empty bins floored at 1e-4, as drift_statistics does (tested against scipy there).
    p = np.maximum(np.array(counts) / 1000, 1e-4)
    q = np.maximum(np.array([0, 0, 0, 0, 0.5, 0.5, 0]), 1e-4)
    assert snapshot.value(names.DRIFT_SCORE, **labels, window="fast", stat="psi") == pytest.approx(
        float(np.sum((q - p) * np.log(q / p))), rel=1e-12
    )
    assert snapshot.value(names.DRIFT_SCORE, **labels, window="short", stat="psi") == 0.0
    assert snapshot.value(names.DRIFTED, **labels) == 1
    assert [(t.feature, t.state, t.window) for t in transitions] == [("x", "drifted", "fast")]

    figures.contribute(
        ModelWindows(
            "m", 10_000, {"short": usual, "long": usual}, {"short": 300, "long": 3600}, usual
        ),
        Snapshot(),
    )
    assert [(t.state, t.window) for t in transitions[1:]] == [("ok", "fast")]


def test_the_fast_window_is_a_drift_window_only() -> None:
    """Traffic figures keep the short and long windows; drift figures get the fast one too."""
    spec = TrafficSpec("fraud", "v1", feature_count=3)
    lines = [
        raw for raw, _ in synthetic_events(spec, 6_000, start_ms=START_MS, rate_per_s=100, seed=3)
    ]
    backtest = Backtest(parse_config({}), [build_reference("fraud", lines)])
    backtest.replay(lines)
    windows: dict[str, set[str]] = {}
    for sample in backtest.evaluator.collector.snapshot.samples:
        if "window" in sample.metric.labels:
            window_name = sample.labels[sample.metric.labels.index("window")]
            windows.setdefault(sample.metric.name, set()).add(window_name)
    assert windows[names.WINDOW_EVENTS.name] == {"short", "long"}
    assert windows[names.LATENCY.name] == {"short", "long"}
    for metric in (names.DRIFT_SCORE, names.DRIFT_P_VALUE, names.DRIFT_SAMPLES):
        assert windows[metric.name] == {"fast", "short", "long"}
