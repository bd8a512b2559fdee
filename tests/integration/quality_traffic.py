"""Generated predictions and their ground truth, and in-process consumers, for the quality tests.

Every figure a test checks is computed again here directly from the generated ground truth, never
copied from the code under test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np
import redis

from consumers.faust_app import FaustEventConsumer
from consumers.kafka_consumer import EventConsumer
from consumers.label_consumer import LabelConsumer
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config

_encoder = msgspec.json.Encoder()


@dataclass
class Prediction:
    event_id: str
    ts_ms: int
    version: str
    deployment: str
    confidence: float
    prediction: str
    truth: str
    region: str

    def event(self, model: str) -> bytes:
        return _encoder.encode(
            {
                "event_id": self.event_id,
                "ts": self.ts_ms,
                "model": model,
                "version": self.version,
                "deployment": self.deployment,
                "latency_ms": 10.0,
                "confidence": self.confidence,
                "prediction": self.prediction,
                "segment": {"region": self.region},
            }
        )


def label_message(event_id: str, label: object, ts_ms: int | None, **extra: object) -> bytes:
    document: dict[str, object] = {"event_id": event_id, "label": label, **extra}
    if ts_ms is not None:
        document["ts"] = ts_ms
    return _encoder.encode(document)


@dataclass
class Expected:
    """Counts computed directly from the ground truth, per series key ``version|deployment|seg``."""

    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, prediction: Prediction, positive: str) -> None:
        said, true = prediction.prediction == positive, prediction.truth == positive
        for segment in ("", f"region={prediction.region}"):
            counts = self.counts[f"{prediction.version}|{prediction.deployment}|{segment}"]
            counts["labelled"] += 1
            counts["correct"] += prediction.prediction == prediction.truth
            counts[f"true_positive@{positive}"] += said and true
            counts[f"false_positive@{positive}"] += said and not true
            counts[f"false_negative@{positive}"] += true and not said


def store_for(config: Config, client: redis.Redis) -> RedisWindowStore:
    return RedisWindowStore(client, layout_from_config(config), KeySchema(config.redis.key_prefix))


def run_until(
    consumer: EventConsumer, done: Callable[[], bool], timeout_s: float = 60, what: str = ""
) -> None:
    """Run ``consumer`` on a thread until ``done()``; then stop it and wait for it to commit."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            consumer.run()
        except BaseException as error:  # surfaced below, in the test's thread
            failure.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert not failure, f"consumer failed: {failure[0]!r}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)
    finally:
        consumer.stop()
        thread.join(60)
    assert not failure, f"consumer failed: {failure[0]!r}"


def consume_events(config: Config, store: RedisWindowStore, model: str, count: int) -> None:
    def applied() -> int:
        return sum(v for k, v in store.totals(model).items() if k.endswith("||events"))

    run_until(EventConsumer(config, store), lambda: applied() >= count, what="events")
    assert applied() == count


def label_messages_seen(store: RedisWindowStore, models: list[str]) -> int:
    """Labels accounted for: counted or refused, under a model or under none."""
    seen = 0
    for model in [*models, "_invalid"]:
        for name, value in store.totals(model).items():
            if name.endswith("||labels") or "labels_refused" in name:
                seen += value
    return seen


def consume_labels(
    config: Config,
    store: RedisWindowStore,
    models: list[str],
    messages: int,
    runtime: str = "confluent",
) -> None:
    """Run a labels consumer of ``runtime`` until every one of ``messages`` is accounted for."""
    consumer: LabelConsumer | FaustEventConsumer = (
        FaustEventConsumer(config, store, labels=True)
        if runtime == "faust"
        else LabelConsumer(config, store)
    )
    run_until(
        consumer,
        lambda: label_messages_seen(store, models) >= messages,
        what="labels",
    )


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def series_counters(fields: dict[str, int], names: list[str]) -> dict[str, Counter[str]]:
    """The long window's fields regrouped like :class:`Expected` (only the given metric names)."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for name, value in fields.items():
        key, _, metric = name.rpartition("|")
        if metric in names:
            found[key][metric] += value
    return dict(found)


def as_plain(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {key: {k: v for k, v in c.items() if v} for key, c in counts.items()}
