"""Seeded synthetic inference traffic, for the demo, the benchmarks and the tests.

Values are drawn with numpy a chunk at a time and encoded with msgspec, so a million ~700-byte
events take seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

__all__ = ["TrafficSpec", "synthetic_events"]

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class TrafficSpec:
    """One stream of events of one model version.

    ``latency_ms`` is lognormal around ``latency_median_ms``; confidence is a Beta draw; feature
    ``i`` is normal with mean ``feature_shift`` (0 for the reference) and standard deviation 1.
    """

    model: str
    version: str
    deployment: str = "stable"
    feature_count: int = 20
    latency_median_ms: float = 20.0
    latency_sigma: float = 0.5
    confidence_alpha: float = 8.0
    confidence_beta: float = 2.0
    error_rate: float = 0.01
    feature_shift: float = 0.0
    shifted_features: int = 0
    segments: Sequence[tuple[str, Sequence[str]]] = ()


def synthetic_events(
    spec: TrafficSpec,
    count: int,
    *,
    start_ms: int,
    rate_per_s: float,
    seed: int,
    chunk: int = 10_000,
    id_prefix: str = "",
    decimals: int = 4,
) -> Iterator[tuple[bytes, dict[str, object]]]:
    """Yield ``(json bytes, event dict)`` for ``count`` events spaced at ``rate_per_s``.

    ``decimals`` rounds feature values: 4 keeps tests' payloads small, 12 gives the ~700-byte
    events of the throughput benchmark.
    """
    rng = np.random.default_rng(seed)
    feature_names = [f"f{i}" for i in range(spec.feature_count)]
    shift = np.zeros(spec.feature_count)
    shift[: spec.shifted_features] = spec.feature_shift
    produced = 0
    while produced < count:
        size = min(chunk, count - produced)
        index = np.arange(produced, produced + size)
        times = start_ms + (index * 1000.0 / rate_per_s).astype(np.int64)
        latency = rng.lognormal(np.log(spec.latency_median_ms), spec.latency_sigma, size)
        confidence = rng.beta(spec.confidence_alpha, spec.confidence_beta, size)
        errors = rng.random(size) < spec.error_rate
        features = rng.normal(0.0, 1.0, (size, spec.feature_count)) + shift
        segment_draws = [
            (attribute, rng.integers(0, len(values), size), values)
            for attribute, values in spec.segments
        ]
        for row in range(size):
            event: dict[str, object] = {
                "event_id": f"{id_prefix}{spec.model}-{spec.version}-{produced + row}",
                "ts": int(times[row]),
                "model": spec.model,
                "version": spec.version,
                "deployment": spec.deployment,
                "latency_ms": round(float(latency[row]), 3),
                "confidence": round(float(confidence[row]), 4),
                "prediction": "positive" if confidence[row] > 0.5 else "negative",
                "features": dict(
                    zip(feature_names, np.round(features[row], decimals).tolist(), strict=True)
                ),
                "error": bool(errors[row]),
            }
            if segment_draws:
                event["segment"] = {
                    attribute: values[int(draws[row])] for attribute, draws, values in segment_draws
                }
            yield _encoder.encode(event), event
        produced += size
