"""Latency buckets: quantiles within the stated relative error of numpy's exact answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.latency_sketch import LogBucketMapping


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 0.999])
@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).lognormal(3, 1, 100_000),
        np.random.default_rng(2).exponential(50, 100_000),
        np.random.default_rng(3).uniform(0.1, 5000, 100_000),
    ],
    ids=["lognormal", "exponential", "uniform"],
)
def test_quantiles_within_one_percent_of_numpy(values: np.ndarray, q: float) -> None:
    mapping = LogBucketMapping(0.01)
    bins, counts = np.unique(mapping.bucket_of(values), return_counts=True)
    estimate = mapping.quantile(bins, counts, q)
    exact = np.quantile(values, q, method="lower")
    assert abs(estimate - exact) <= 0.01 * exact


@settings(max_examples=200)
@given(
    st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=500),
    st.floats(min_value=0, max_value=1),
)
def test_bound_holds_for_any_sample(values: list[float], q: float) -> None:
    mapping = LogBucketMapping(0.01)
    array = np.asarray(values)
    bins, counts = np.unique(mapping.bucket_of(array), return_counts=True)
    exact = float(np.quantile(array, q, method="lower"))
    assert abs(mapping.quantile(bins, counts, q) - exact) <= 0.01 * exact * (1 + 1e-9)


def test_merging_is_adding_counts() -> None:
    mapping = LogBucketMapping(0.01)
    rng = np.random.default_rng(9)
    first, second = rng.lognormal(2, 1, 5000), rng.lognormal(4, 0.3, 7000)
    merged: dict[int, int] = {}
    for part in (first, second):
        for b, c in zip(*np.unique(mapping.bucket_of(part), return_counts=True), strict=True):
            merged[int(b)] = merged.get(int(b), 0) + int(c)
    bins = np.array(list(merged))
    counts = np.array(list(merged.values()))
    exact = np.quantile(np.concatenate([first, second]), 0.99, method="lower")
    assert abs(mapping.quantile(bins, counts, 0.99) - exact) <= 0.01 * exact


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        LogBucketMapping(0)
    with pytest.raises(ValueError, match="minimum_ms"):
        LogBucketMapping(0.01, minimum_ms=0)
    assert np.isnan(
        LogBucketMapping().quantile(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 0.5)
    )
