"""Latency in log-spaced buckets with bounded relative error (the DDSketch mapping).

A value ``x`` falls in bucket ``i = ceil(log(x) / log(gamma))`` with
``gamma = (1 + alpha) / (1 - alpha)``; every value in bucket ``i`` lies in
``(gamma**(i-1), gamma**i]``, and the bucket's representative ``2 * gamma**i / (gamma + 1)`` is
within relative error ``alpha`` of each of them. Buckets are plain integer counts, so sketches of
different time buckets, processes and partitions merge by adding counts: exactly what windows made
of Redis hash increments need.

Values below ``minimum_ms`` (1 microsecond) share the lowest bucket: their absolute error is at
most a microsecond, which no latency alert cares about.

>>> import numpy as np
>>> mapping = LogBucketMapping(relative_accuracy=0.01)
>>> values = np.random.default_rng(7).lognormal(3.0, 0.5, 10_000)
>>> indices, counts = np.unique(mapping.bucket_of(values), return_counts=True)
>>> exact = float(np.quantile(values, 0.99, method="lower"))
>>> abs(mapping.quantile(indices, counts, 0.99) - exact) / exact <= 0.01
True
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["LogBucketMapping"]


class LogBucketMapping:
    """Maps latencies (milliseconds) to integer bucket indices and back.

    Parameters
    ----------
    relative_accuracy
        ``alpha``: the largest relative error of a quantile read back from the buckets.
    minimum_ms
        Values at or below it share one bucket.
    """

    def __init__(self, relative_accuracy: float = 0.01, minimum_ms: float = 1e-3) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if not minimum_ms > 0:
            raise ValueError(f"minimum_ms must be > 0, got {minimum_ms!r}")
        self.relative_accuracy = relative_accuracy
        self.minimum_ms = minimum_ms
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)

    def bucket_of(self, values_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Bucket index of each value (values must be finite and >= 0)."""
        clipped = np.maximum(values_ms, self.minimum_ms)
        indices: npt.NDArray[np.int64] = np.ceil(np.log(clipped) / self._log_gamma).astype(np.int64)
        return indices

    def value_of(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The representative value of each bucket, within ``relative_accuracy`` of its members."""
        values: npt.NDArray[np.float64] = 2 * np.power(self.gamma, indices) / (self.gamma + 1)
        return values

    def quantile(
        self,
        indices: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        q: float,
    ) -> float:
        """The ``q`` quantile of the values counted in ``(indices, counts)``; nan when empty.

        The rank follows numpy's ``method="lower"``: the value of order statistic
        ``floor(q * (n - 1))``.
        """
        total = int(counts.sum())
        if total == 0:
            return math.nan
        order = np.argsort(indices, kind="stable")
        cumulative = np.cumsum(counts[order])
        rank = math.floor(q * (total - 1))
        position = int(np.searchsorted(cumulative, rank, side="right"))
        return float(self.value_of(indices[order][position : position + 1])[0])
