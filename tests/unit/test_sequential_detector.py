"""The sequential detector: batches against one value at a time, fitted thresholds, the format."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from detectors.reference import FeatureReference, Reference, ReferenceFormatError
from detectors.sequential_detector import (
    ALLOWANCE_SD,
    HALF_LIFE_EVENTS,
    MINIMUM_VARIANCE,
    SequentialDetector,
    SequentialPolicy,
    SequentialReference,
    SeriesState,
    cusum,
    cusum_threshold,
)


def _one_at_a_time(
    detector: SequentialDetector, values: np.ndarray
) -> tuple[list[list[int]], SeriesState]:
    """The detector written plainly, one value at a time: alarm positions per feature, state."""
    keep = 0.5 ** (1 / HALF_LIFE_EVENTS)
    state = detector.start()
    alarms: list[list[int]] = [[] for _ in detector.names]
    for column, reference in enumerate(detector.references):
        mean, variance = state.mean[column], state.variance[column]
        upper = lower = 0.0
        upper_threshold, lower_threshold = detector.thresholds[column]
        for position, value in enumerate(values[:, column].tolist()):
            if math.isnan(value):
                continue
            score = float(np.interp(value, reference.values, reference.scores))
            standardised = (score - mean) / math.sqrt(max(variance, MINIMUM_VARIANCE))
            variance = keep * variance + (1 - keep) * (score - mean) ** 2
            mean = keep * mean + (1 - keep) * score
            upper = max(0.0, upper + standardised - ALLOWANCE_SD)
            lower = max(0.0, lower - standardised - ALLOWANCE_SD)
            if upper >= upper_threshold or lower >= lower_threshold:
                alarms[column].append(position)
            upper = 0.0 if upper >= upper_threshold else upper
            lower = 0.0 if lower >= lower_threshold else lower
        state.mean[column], state.variance[column] = mean, variance
        state.upper[column], state.lower[column] = upper, lower
    return alarms, state


def test_batches_give_the_alarms_and_state_of_one_value_at_a_time() -> None:
    rng = np.random.default_rng(5)
    references = [
        SequentialReference.fit(rng.normal(0, 1, 20_000)),
        SequentialReference.fit(rng.lognormal(0, 1, 20_000)),
        SequentialReference.fit(rng.poisson(2, 20_000).astype(np.float64)),
    ]
    assert all(reference is not None for reference in references)
    detector = SequentialDetector(
        [r for r in references if r is not None], SequentialPolicy(), names=("n", "l", "p")
    )
    before, after = 3_000, 2_000
    values = np.column_stack(
        [
            np.concatenate([rng.normal(0, 1, before), rng.normal(1, 1, after)]),
            np.concatenate([rng.lognormal(0, 1, before), rng.lognormal(-1, 1, after)]),
            rng.poisson(2, before + after).astype(np.float64),
        ]
    )
    values[rng.random(len(values)) < 0.05, 0] = np.nan  # missing values are skipped
    times_ms = np.arange(len(values), dtype=np.int64) * 10

    state = detector.start()
    found: dict[str, list[tuple[int, int, int]]] = {name: [] for name in detector.names}
    cuts = [
        0,
        *sorted(rng.choice(np.arange(1, len(values)), 7, replace=False).tolist()),
        len(values),
    ]
    for start, end in itertools.pairwise(cuts):
        for alarm in detector.advance(state, values[start:end], times_ms[start:end]):
            found[alarm.field].append((alarm.first_ms, alarm.last_ms, alarm.count))

    expected, expected_state = _one_at_a_time(detector, values)
    for column, name in enumerate(detector.names):
        positions = expected[column]
        assert sum(count for _, _, count in found[name]) == len(positions), name
        if positions:
            assert found[name][0][0] == times_ms[positions[0]]
            assert found[name][-1][1] == times_ms[positions[-1]]
    # Not vacuous: both shifted features alarm after the change, the unchanged one never.
    assert expected[0] and expected[0][0] >= before and expected[1] and expected[1][0] >= before
    assert expected[2] == []
    for part in ("mean", "variance", "upper", "lower"):
        assert np.allclose(getattr(state, part), getattr(expected_state, part), rtol=1e-9)


def _autocorrelated(rng: np.random.Generator, size: int, correlation: float) -> np.ndarray:
    noise = rng.normal(0, math.sqrt(1 - correlation**2), size)
    values = np.empty(size)
    values[0] = rng.normal()
    for index in range(1, size):
        values[index] = correlation * values[index - 1] + noise[index]
    return values


@pytest.mark.parametrize(
    ("draw", "upper", "lower"),
    [
        (lambda rng: rng.normal(0, 1, 200_000), (1.0, 1.05), (1.0, 1.05)),
        (lambda rng: rng.lognormal(0, 1, 200_000), (1.0, 1.05), (1.0, 1.05)),
        # Two values: a 1 scores 3 running sd above the mean, a 0 a third of one below, so the
        # upper side needs a higher threshold and the lower one can never gather evidence.
        (lambda rng: (rng.random(200_000) < 0.1).astype(np.float64), (1.4, 2.0), None),
        # Neighbours correlated at 0.3: sums of 200 vary 1.85 times as much as independent ones.
        (lambda rng: _autocorrelated(rng, 200_000, 0.3), (1.5, 2.2), (1.5, 2.2)),
    ],
    ids=["normal", "lognormal", "binary", "autocorrelated"],
)
def test_thresholds_rise_where_scores_are_not_independent_normal_ones(
    draw: object, upper: tuple[float, float], lower: tuple[float, float] | None
) -> None:
    reference = SequentialReference.fit(draw(np.random.default_rng(3)))  # type: ignore[operator]
    assert reference is not None
    assert reference.upper_factor is not None and upper[0] <= reference.upper_factor < upper[1]
    if lower is None:
        assert reference.lower_factor is None
    else:
        assert reference.lower_factor is not None and lower[0] <= reference.lower_factor < lower[1]


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


def test_siegmund_threshold_holds_its_false_alarm_rate_within_ten_percent() -> None:
    """Simulated run lengths of the one-sided CUSUM of N(0, 1) - 0.5 against the approximation,
    at a run length short enough to simulate (2,000 values; about 2,000 alarms)."""
    threshold = cusum_threshold(ALLOWANCE_SD, 2_000)
    increments = np.random.default_rng(13).normal(0, 1, 4_000_000) - ALLOWANCE_SD
    alarms, _, _ = cusum(increments, 0.0, threshold)
    assert len(increments) / len(alarms) == pytest.approx(2_000, rel=0.1)


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
