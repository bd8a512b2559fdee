"""Quality statistics against reference computations (statsmodels), and their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from detectors.label_free_estimate import CalibrationError, ConfidenceCalibration
from detectors.quality_statistics import ConfusionCounts, two_proportion_p_value, wilson_interval
from driftline.config import ConfigError, parse_config


def test_wilson_interval_equals_statsmodels_to_1e_9() -> None:
    generator = np.random.default_rng(5)
    trials = generator.integers(1, 100_000, 2000)
    successes = np.minimum(trials, generator.integers(0, 100_000, 2000))
    successes[:50] = 0  # the edges, where the normal approximation fails
    successes[50:100] = trials[50:100]
    low, high = wilson_interval(successes, trials)
    for confidence in (0.9, 0.95, 0.99):
        low, high = wilson_interval(successes, trials, confidence)
        ref_low, ref_high = proportion_confint(successes, trials, 1 - confidence, method="wilson")
        np.testing.assert_allclose(low, ref_low, rtol=0, atol=1e-9)
        np.testing.assert_allclose(high, ref_high, rtol=0, atol=1e-9)


def test_wilson_interval_of_no_trials_is_nan() -> None:
    low, high = wilson_interval([0, 3], [0, 10])
    assert math.isnan(low[0]) and math.isnan(high[0]) and 0 < low[1] < 0.3 < high[1] < 1
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


def test_two_proportion_p_value_equals_statsmodels() -> None:
    generator = np.random.default_rng(6)
    for _ in range(500):
        n_a, n_b = (int(n) for n in generator.integers(10, 50_000, 2))
        x_a, x_b = int(generator.integers(1, n_a)), int(generator.integers(1, n_b))
        _, expected = proportions_ztest([x_a, x_b], [n_a, n_b])
        assert abs(two_proportion_p_value(x_a, n_a, x_b, n_b) - expected) < 1e-9
    assert two_proportion_p_value(5, 5, 7, 7) == 1.0
    assert math.isnan(two_proportion_p_value(0, 0, 1, 2))


def test_confusion_figures_are_undefined_without_their_denominator() -> None:
    counts = ConfusionCounts(true_positive=0, false_positive=0, false_negative=4)
    assert math.isnan(counts.precision) and counts.recall == 0.0 and counts.f1 == 0.0


def test_calibration_is_monotone_and_recovers_a_calibrated_model() -> None:
    generator = np.random.default_rng(7)
    confidence = generator.beta(8, 2, 50_000)
    right = generator.random(50_000) < confidence
    bins = np.minimum((confidence * 20).astype(int), 19)
    labelled = np.bincount(bins, minlength=20)
    correct = np.bincount(bins[right], minlength=20)
    calibration = ConfidenceCalibration(labelled.tolist(), correct.tolist())
    assert np.all(np.diff(calibration.accuracy_by_bin) >= 0)
    shifted = generator.beta(5, 3, 20_000)
    counts = np.bincount(np.minimum((shifted * 20).astype(int), 19), minlength=20)
    assert abs(calibration.estimate(counts) - float(np.mean(shifted))) < 0.01


def test_calibration_refuses_unusable_reference_data() -> None:
    with pytest.raises(CalibrationError, match="fewer than the 100"):
        ConfidenceCalibration([10, 10], [5, 5])
    with pytest.raises(CalibrationError, match="between 0 and the labelled"):
        ConfidenceCalibration([100, 100], [101, 5])
    with pytest.raises(CalibrationError, match="equally long"):
        ConfidenceCalibration([100, 100], [5])


def test_labels_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"models\.fraud\.labels\.kind"):
        parse_config({"models": {"fraud": {"labels": {"kind": "ranking"}}}})
    with pytest.raises(ConfigError, match="positive_classes must be unique"):
        parse_config({"models": {"fraud": {"labels": {"positive_classes": ["a", "a"]}}}})
    with pytest.raises(ConfigError, match=r"quality\.thresholds\.0"):
        parse_config({"quality": {"thresholds": [{"figure": "precision", "below": 0.9}]}})
    config = parse_config({"models": {"fraud": {"labels": {"horizon_seconds": 60}}}})
    labels = config.model("fraud").labels
    assert labels is not None and labels.record_ms == (60 + 3600) * 1000
