"""Generated rollout traffic for the gate tests: versions with exactly the quality asked for.

Proportions are exact, not drawn: a leg asked for precision 0.85 over 600 predicted frauds has
exactly 510 true ones, so a test's expectation is arithmetic on the plan, never a copy of what the
code under test computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

from driftline.events import InferenceEvent, decode_event

__all__ = ["Leg", "LegTraffic", "leg_traffic", "shadow_of"]

_encoder = msgspec.json.Encoder()
POSITIVE = "fraud"
FEATURES = ("f0", "f1", "f2", "f3")


@dataclass(frozen=True)
class Leg:
    """One version's traffic: ``count`` events spread over ``[end - span, end)``."""

    model: str
    version: str
    deployment: str
    count: int
    precision: float = 0.9
    positive_share: float = 0.3
    error_ratio: float = 0.01
    latency_factor: float = 1.0
    feature_shift: float = 0.0
    seed: int = 0


@dataclass
class LegTraffic:
    leg: Leg
    events: list[bytes]
    labels: list[bytes]
    event_ids: list[str]
    predictions: list[str]
    truths: list[str]
    latency_ms: np.ndarray
    errors: int
    true_positive: int
    predicted_positive: int

    def decoded(self) -> list[InferenceEvent]:
        found = [decode_event(raw) for raw in self.events]
        return [event for event in found if isinstance(event, InferenceEvent)]


def leg_traffic(
    leg: Leg, *, end_ms: int, span_ms: int, id_prefix: str = "", event_ids: list[str] | None = None
) -> LegTraffic:
    """The leg's events and their labels (label time: one second after the prediction)."""
    rng = np.random.default_rng(leg.seed)
    count = leg.count
    times = np.sort(end_ms - 1000 - rng.integers(0, max(1, span_ms - 1000), count))
    order = rng.permutation(count)
    predicted_positive = round(leg.positive_share * count)
    said = np.zeros(count, dtype=bool)
    said[order[:predicted_positive]] = True
    true_positive = round(leg.precision * predicted_positive)
    truth = np.zeros(count, dtype=bool)
    truth[order[:true_positive]] = True
    negatives = order[predicted_positive:]
    truth[negatives[: round(0.05 * len(negatives))]] = True
    errors = np.zeros(count, dtype=bool)
    error_count = round(leg.error_ratio * count)
    errors[rng.permutation(count)[:error_count]] = True
    latency = rng.lognormal(np.log(20.0), 0.3, count) * leg.latency_factor
    confidence = rng.beta(8.0, 2.0, count)
    features = rng.normal(0.0, 1.0, (count, len(FEATURES)))
    features[:, :3] += leg.feature_shift
    ids = event_ids or [f"{id_prefix}{leg.model}-{leg.version}-{i}" for i in range(count)]
    events, labels, predictions, truths = [], [], [], []
    for i in range(count):
        prediction = POSITIVE if said[i] else "ok"
        actual = POSITIVE if truth[i] else "ok"
        predictions.append(prediction)
        truths.append(actual)
        events.append(
            _encoder.encode(
                {
                    "event_id": ids[i],
                    "ts": int(times[i]),
                    "model": leg.model,
                    "version": leg.version,
                    "deployment": leg.deployment,
                    "latency_ms": round(float(latency[i]), 3),
                    "confidence": round(float(confidence[i]), 4),
                    "prediction": prediction,
                    "features": dict(zip(FEATURES, np.round(features[i], 4).tolist(), strict=True)),
                    "error": bool(errors[i]),
                }
            )
        )
        labels.append(
            _encoder.encode({"event_id": ids[i], "label": actual, "ts": int(times[i]) + 1000})
        )
    return LegTraffic(
        leg,
        events,
        labels,
        ids,
        predictions,
        truths,
        latency,
        error_count,
        true_positive,
        predicted_positive,
    )


def shadow_of(stable: LegTraffic, version: str, count: int, flips: int, *, seed: int) -> LegTraffic:
    """A shadow version answering the same inputs as ``stable``'s first ``count`` events (same
    event_id, time and features), predicting what stable did except on exactly ``flips`` of
    them: true frauds it calls "ok". No labels of its own: stable's labels judge both legs."""
    rng = np.random.default_rng(seed)
    said = np.array(stable.predictions[:count]) == POSITIVE
    truth = np.array(stable.truths[:count]) == POSITIVE
    candidates = np.flatnonzero(said & truth)
    assert len(candidates) >= flips, "not enough true frauds to flip"
    flipped = rng.permutation(candidates)[:flips]
    said[flipped] = False
    errors = np.zeros(count, dtype=bool)
    errors[rng.permutation(count)[: round(0.01 * count)]] = True
    latency = rng.lognormal(np.log(20.0), 0.3, count)
    confidence = rng.beta(8.0, 2.0, count)
    events, predictions = [], []
    for i in range(count):
        original = msgspec.json.decode(stable.events[i])
        prediction = POSITIVE if said[i] else "ok"
        predictions.append(prediction)
        original.update(
            version=version,
            deployment="shadow",
            prediction=prediction,
            latency_ms=round(float(latency[i]), 3),
            confidence=round(float(confidence[i]), 4),
            error=bool(errors[i]),
        )
        events.append(_encoder.encode(original))
    return LegTraffic(
        Leg(stable.leg.model, version, "shadow", count, seed=seed),
        events,
        [],
        stable.event_ids[:count],
        predictions,
        stable.truths[:count],
        latency,
        int(errors.sum()),
        int((said & truth).sum()),
        int(said.sum()),
    )
