"""The sequential detector: batches against one value at a time, fitted thresholds, the format."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from detectors.reference import FeatureReference, Reference, ReferenceFormatError
from detectors.sequential_detector import (
    ADVANCE_CHUNK_VALUES,
    ALLOWANCES_SD,
    HALF_LIFE_EVENTS,
    MINIMUM_TRAFFIC_SPAN_S,
    MINIMUM_VARIANCE,
    TESTS,
    TRAFFIC_LEVELS_PER_DOUBLING,
    TRAFFIC_TIME_CONSTANT_S,
    PartitionState,
    SequentialDetector,
    SequentialPolicy,
    SequentialReference,
    SeriesState,
    cusum,
    cusum_threshold,
)


def _one_at_a_time(
    detector: SequentialDetector, values: np.ndarray, times_ms: np.ndarray
) -> tuple[list[list[tuple[int, float]]], SeriesState]:
    """The detector written plainly, one value at a time: per feature, each alarm's position and
    the shift its test is tuned to; and the state."""
    keep = 0.5 ** (1 / HALF_LIFE_EVENTS)
    state = detector.start()
    # The series' traffic, event by event; its level is taken at the start of every chunk.
    levels = []
    weight, since_ms, latest_ms = 0.0, int(times_ms[0]), int(times_ms[0])
    for position, time_ms in enumerate(times_ms.tolist()):
        if position % ADVANCE_CHUNK_VALUES == 0:
            span_s = max(MINIMUM_TRAFFIC_SPAN_S, (latest_ms - since_ms) / 1000)
            per_second = weight / (
                TRAFFIC_TIME_CONSTANT_S * (1 - math.exp(-span_s / TRAFFIC_TIME_CONSTANT_S))
            )
            ratio = per_second / detector.policy.events_per_second
            level = 0 if ratio <= 1 else math.floor(TRAFFIC_LEVELS_PER_DOUBLING * math.log2(ratio))
        levels.append(level)
        newest_ms = max(latest_ms, time_ms)
        per_ms = 1 / (1000 * TRAFFIC_TIME_CONSTANT_S)
        weight = weight * math.exp((latest_ms - newest_ms) * per_ms) + math.exp(
            (time_ms - newest_ms) * per_ms
        )
        latest_ms = newest_ms
    alarms: list[list[tuple[int, float]]] = [[] for _ in detector.names]
    for column, reference in enumerate(detector.references):
        mean, variance = state.mean[column], state.variance[column]
        sums = [0.0] * len(TESTS)
        for position, value in enumerate(values[:, column].tolist()):
            thresholds = detector.thresholds_at(levels[position])[column].tolist()
            if math.isnan(value):
                continue
            score = float(np.interp(value, reference.values, reference.scores))
            standardised = (score - mean) / math.sqrt(max(variance, MINIMUM_VARIANCE))
            variance = keep * variance + (1 - keep) * (score - mean) ** 2
            mean = keep * mean + (1 - keep) * score
            for test, (allowance, sign) in enumerate(TESTS):
                ratio = 2 * allowance * (sign * standardised - allowance)
                sums[test] = max(0.0, sums[test] + ratio)
            crossed = [test for test in range(len(TESTS)) if sums[test] >= thresholds[test]]
            if crossed:
                allowance, sign = TESTS[crossed[0]]
                alarms[column].append((position, sign * 2 * allowance))
                mean += sign * 2 * allowance * math.sqrt(max(variance, MINIMUM_VARIANCE))
                sums = [0.0] * len(TESTS)
        state.mean[column], state.variance[column], state.sums[column] = mean, variance, sums
    state.level, state.traffic = levels[-1], weight
    return alarms, state


def test_batches_give_the_alarms_and_state_of_one_value_at_a_time() -> None:
    rng = np.random.default_rng(5)
    references = [
        SequentialReference.fit(rng.normal(0, 1, 20_000)),
        SequentialReference.fit(rng.lognormal(0, 1, 20_000)),
        SequentialReference.fit(rng.poisson(2, 20_000).astype(np.float64)),
    ]
    assert all(reference is not None for reference in references)
    # 100 events/s where the policy says 10: each chunk's thresholds are those of the traffic
    # measured before it, over at least a minute (levels 0, 7, 11, then 13).
    detector = SequentialDetector(
        [r for r in references if r is not None],
        SequentialPolicy(events_per_second=10.0),
        names=("n", "l", "p"),
    )
    before, after = 7_000, 2_000
    values = np.column_stack(
        [
            np.concatenate([rng.normal(0, 1, before), rng.normal(0.5, 1, after)]),
            np.concatenate([rng.lognormal(0, 1, before), rng.lognormal(-1, 1, after)]),
            rng.poisson(2, before + after).astype(np.float64),
        ]
    )
    values[rng.random(len(values)) < 0.05, 0] = np.nan  # missing values are skipped
    times_ms = np.arange(len(values), dtype=np.int64) * 10

    state = detector.start()
    found: dict[str, list[tuple[int, int, int, float]]] = {name: [] for name in detector.names}
    cuts = [
        0,
        *sorted(rng.choice(np.arange(1, len(values)), 7, replace=False).tolist()),
        len(values),
    ]
    for start, end in itertools.pairwise(cuts):
        for alarm in detector.advance(state, values[start:end], times_ms[start:end]):
            found[alarm.field].append((alarm.first_ms, alarm.last_ms, alarm.count, alarm.shift_sd))

    expected, expected_state = _one_at_a_time(detector, values, times_ms)
    for column, name in enumerate(detector.names):
        positions = [position for position, _ in expected[column]]
        assert sum(count for _, _, count, _ in found[name]) == len(positions), name
        assert sum(shift for *_, shift in found[name]) == sum(s for _, s in expected[column])
        if positions:
            assert found[name][0][0] == times_ms[positions[0]]
            assert found[name][-1][1] == times_ms[positions[-1]]
    # Not vacuous: both shifted features alarm after the change, upwards and downwards; the
    # unchanged one never.
    assert expected[0] and expected[0][0][0] >= before and expected[1][0][0] >= before
    assert expected[0][0][1] > 0 and expected[1][0][1] < 0
    assert expected[2] == []
    assert state.level == expected_state.level == 13
    for part in ("mean", "variance", "sums", "traffic"):
        assert np.allclose(getattr(state, part), getattr(expected_state, part), rtol=1e-9)


def _autocorrelated(rng: np.random.Generator, size: int, correlation: float) -> np.ndarray:
    noise = rng.normal(0, math.sqrt(1 - correlation**2), size)
    values = np.empty(size)
    values[0] = rng.normal()
    for index in range(1, size):
        values[index] = correlation * values[index - 1] + noise[index]
    return values


Range = tuple[float, float] | None
NONE_RAISED = ((1.0, 1.01),) * len(ALLOWANCES_SD)


@pytest.mark.parametrize(
    ("draw", "upper", "lower"),
    [
        (lambda rng: rng.normal(0, 1, 200_000), NONE_RAISED, NONE_RAISED),
        (lambda rng: rng.lognormal(0, 1, 200_000), NONE_RAISED, NONE_RAISED),
        # Two values: a 1 scores 3 running sd above the mean, a 0 a third of one below. The upper
        # side needs higher thresholds, the more so the larger the allowance, and the lower side
        # of the 1 sd test can never gather evidence (a third is less than its allowance).
        (
            lambda rng: (rng.random(200_000) < 0.1).astype(np.float64),
            ((1.5, 1.8), (1.25, 1.5), (1.1, 1.3)),
            (None, (1.0, 1.01), (1.0, 1.01)),
        ),
        # Neighbours correlated at 0.3: sums of 200 vary 1.85 times as much as independent ones.
        (
            lambda rng: _autocorrelated(rng, 200_000, 0.3),
            ((1.5, 2.2),) * len(ALLOWANCES_SD),
            ((1.5, 2.2),) * len(ALLOWANCES_SD),
        ),
    ],
    ids=["normal", "lognormal", "binary", "autocorrelated"],
)
def test_thresholds_rise_where_scores_are_not_independent_normal_ones(
    draw: object, upper: tuple[Range, ...], lower: tuple[Range, ...]
) -> None:
    reference = SequentialReference.fit(draw(np.random.default_rng(3)))  # type: ignore[operator]
    assert reference is not None
    for factors, expected in ((reference.upper_factors, upper), (reference.lower_factors, lower)):
        assert len(factors) == len(expected) == len(ALLOWANCES_SD)
        for factor, bounds in zip(factors, expected, strict=True):
            if bounds is None:
                assert factor is None, factors
            else:
                assert factor is not None and bounds[0] <= factor < bounds[1], factors


def test_scores_are_normal_scores_of_mid_ranks() -> None:
    """The table gives Φ⁻¹ of the mid-rank, as scipy's rankdata(method='average') ranks."""
    rng = np.random.default_rng(9)
    numbers = rng.poisson(3, 10_000).astype(np.float64)
    reference = SequentialReference.fit(numbers)
    assert reference is not None
    ranks = stats.rankdata(numbers, method="average")
    for value, score in zip(reference.values, reference.scores, strict=True):
        mid_rank = ranks[numbers == value][0] - 0.5
        assert score == pytest.approx(special.ndtri(mid_rank / len(numbers)), abs=1e-12)


def test_too_little_or_constant_data_gets_no_test() -> None:
    rng = np.random.default_rng(1)
    assert SequentialReference.fit(rng.normal(0, 1, 1_999)) is None
    assert SequentialReference.fit(np.full(10_000, 4.0)) is None


@pytest.mark.parametrize("allowance", ALLOWANCES_SD)
def test_siegmund_threshold_holds_its_false_alarm_rate_within_ten_percent(allowance: float) -> None:
    """Simulated run lengths of the one-sided CUSUM of N(0, 1) log-likelihood ratios, restarted
    after each alarm, against the approximation, at a run length short enough to simulate (2,000
    values; about 2,000 alarms)."""
    threshold = np.array([[cusum_threshold(allowance, 2_000)]])
    slope, offset = np.array([2 * allowance]), np.array([2 * allowance**2])
    scores = np.random.default_rng(13).normal(0, 1, 4_000_000)[None, :]
    alarms, origin = 0, 0
    while True:
        [crossing], _ = cusum(scores[:, origin:], slope, offset, np.zeros((1, 1)), threshold)
        if crossing is None:
            break
        alarms, origin = alarms + 1, origin + crossing.position + 1
    assert scores.size / alarms == pytest.approx(2_000, rel=0.1)


def _false_reports(
    detector: SequentialDetector, values: np.ndarray, spacing_ms: int
) -> list[list[float]]:
    """Feed ``values`` ``spacing_ms`` apart, 1,000 at a time, into a new state. Alarms within
    2,000 values of the one before are one report (as the hold makes them): per report its first
    and last alarm's times, net shift and alarms."""
    state = detector.start()
    reports: list[list[float]] = []
    for begin in range(0, len(values), 1_000):
        batch = values[begin : begin + 1_000, None]
        times_ms = np.arange(begin, begin + len(batch)) * spacing_ms
        for alarm in detector.advance(state, batch, times_ms):
            if reports and alarm.first_ms - reports[-1][1] <= 2_000 * spacing_ms:
                reports[-1][1:] = [
                    alarm.last_ms,
                    reports[-1][2] + alarm.shift_sd,
                    reports[-1][3] + alarm.count,
                ]
            else:
                reports.append([alarm.first_ms, alarm.last_ms, alarm.shift_sd, alarm.count])
    return reports


def test_the_budget_holds_over_all_tests_of_a_feature() -> None:
    """Six tests share one feature's budget: one false alarm per 20,000 N(0, 1) values. They are
    correlated, so together they raise at most the budget (Poisson spread: +-10 of 100). A false
    alarm moves the test's normal, and the next values move it back with a second alarm at
    once: the pair is one false report, as the hold makes it, and is counted once."""
    rng = np.random.default_rng(4)
    reference = SequentialReference.fit(rng.normal(0, 1, 200_000))
    assert reference is not None
    policy = SequentialPolicy(false_alarms_per_day=86_400 / 20_000, events_per_second=1.0)
    detector = SequentialDetector([reference], policy, names=("x",))
    reports = _false_reports(detector, rng.normal(0, 1, 2_000_000), spacing_ms=1_000)
    assert 70 <= len(reports) <= 115
    # The pairs: nearly every false alarm is corrected, and its report nets no shift.
    assert sum(report[3] for report in reports) >= 1.8 * len(reports)
    assert sum(report[2] == 0 for report in reports) >= 0.95 * len(reports)


def test_the_budget_holds_a_day_at_ten_times_the_traffic() -> None:
    """The same values, ten a second where the policy says one: 2.3 days' worth, not 23. The
    series' measured traffic raises its thresholds to those of a policy set for it (less a
    quarter step: 2^(13/4) = 9.5 times), so its false reports stay about 10 (budget 4.3 a day),
    not the 86 of thresholds set for the policy's traffic."""
    rng = np.random.default_rng(4)
    reference = SequentialReference.fit(rng.normal(0, 1, 200_000))
    assert reference is not None
    policy = SequentialPolicy(false_alarms_per_day=86_400 / 20_000, events_per_second=1.0)
    detector = SequentialDetector([reference], policy, names=("x",))
    values = rng.normal(0, 1, 2_000_000)
    reports = _false_reports(detector, values, spacing_ms=100)
    assert 2 <= len(reports) <= 20

    state = detector.start()
    detector.advance(state, values[:10_000, None], np.arange(10_000) * 100)
    assert state.level == 13
    measured = dataclasses.replace(policy, events_per_second=2 ** (13 / 4))
    assert np.array_equal(
        detector.thresholds_at(13),
        SequentialDetector([reference], measured, names=("x",)).thresholds,
    )
    # Below the policy's traffic, thresholds stay as they are.
    state = detector.start()
    detector.advance(state, values[:10_000, None], np.arange(10_000) * 2_000)
    assert state.level == 0
    # Before a minute, the events count as spread over a minute: the 2,048 of a new series' first
    # 20 s at 100 a second judge its next chunk at 34 a second (level 20), not at the policy's
    # 1 (level 0) nor at the 100 it will measure (26).
    state = detector.start()
    detector.advance(state, values[:3_000, None], np.arange(3_000) * 10)
    assert state.level == 20
    detector.advance(state, values[3_000:70_000, None], np.arange(3_000, 70_000) * 10)
    assert state.level == 26


@pytest.mark.parametrize("shift_sd", [1.0, -0.5, 0.25, 0.75])
def test_a_lasting_shift_nets_its_size(shift_sd: float) -> None:
    """The alarms of a lasting shift move the running mean by about the shift, each by the shift
    its test is tuned to: their sum is the shift to the nearest 0.25 sd."""
    rng = np.random.default_rng(8)
    reference = SequentialReference.fit(rng.normal(0, 1, 200_000))
    assert reference is not None
    detector = SequentialDetector([reference], SequentialPolicy(), names=("x",))
    nets = []
    for _ in range(5):
        state = detector.start()
        values = np.concatenate([rng.normal(0, 1, 10_000), rng.normal(shift_sd, 1, 20_000)])
        alarms = detector.advance(state, values[:, None], np.arange(len(values)))
        assert alarms and alarms[0].first_ms >= 10_000
        nets.append(sum(alarm.shift_sd for alarm in alarms))
    assert max(abs(net - shift_sd) for net in nets) <= 0.25


def test_reference_documents_carry_the_block_and_name_a_bad_one() -> None:
    sequential = SequentialReference.fit(np.random.default_rng(2).normal(0, 1, 5_000))
    assert sequential is not None
    feature = FeatureReference.numeric(
        "amount",
        edges=(0.0, 1.0),
        counts=(0, 0, 5, 0),
        bin_values=(0.0, 0.5, 1.0),
        spread=1.0,
        sequential=sequential,
    )
    reference = Reference(model="fraud", created_at_ms=0, features=(feature,))
    assert Reference.from_json(reference.to_json()) == reference
    without = Reference(
        model="fraud",
        created_at_ms=0,
        features=(
            FeatureReference.numeric(
                "amount",
                edges=(0.0, 1.0),
                counts=(0, 0, 5, 0),
                bin_values=(0.0, 0.5, 1.0),
                spread=1.0,
            ),
        ),
    )
    assert "sequential" not in without.to_json()

    document = reference.to_dict()
    del document["reference_id"]
    document["features"][0]["sequential"]["values"][1] = document["features"][0]["sequential"][
        "values"
    ][0]
    with pytest.raises(ReferenceFormatError, match=r"features\[0\]\.sequential\.values"):
        Reference.from_dict(document)
    document["features"][0]["sequential"] = {"values": []}
    with pytest.raises(ReferenceFormatError, match=r"features\[0\]\.sequential: expected the keys"):
        Reference.from_dict(document)


def test_blocks_and_states_from_before_the_smaller_allowances_still_load() -> None:
    """A block with one factor per side keeps its document, so its reference keeps its id, and
    runs the 1 sd test only; a stored state without sums starts its sums from 0."""
    fitted = SequentialReference.fit(np.random.default_rng(2).normal(0, 1, 5_000))
    assert fitted is not None
    document = fitted.to_dict()
    del document["upper_factors"], document["lower_factors"]
    document["upper_factor"], document["lower_factor"] = 1.25, None
    old = SequentialReference.from_dict(document, "sequential")
    assert (old.upper_factors, old.lower_factors) == ((1.25,), (None,))
    assert old.to_dict() == document
    detector = SequentialDetector([old], SequentialPolicy(), names=("x",))
    assert np.isfinite(detector.thresholds[0]).tolist() == [True] + [False] * (len(TESTS) - 1)

    stored = PartitionState.from_json(
        '{"offset": 9, "field_tag": "t", "series": {"k": {"mean": [0.1], "variance": [1.2],'
        ' "upper": [3.0], "lower": [0.0]}}}'
    )
    state = stored.series["k"]
    assert (state.mean, state.variance) == ([0.1], [1.2])
    assert state.sums_of(0).tolist() == [0.0] * len(TESTS)
    assert detector.advance(state, np.full((400, 1), 5.0), np.arange(400))
