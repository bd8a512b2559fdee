"""Delayed, shuffled, duplicated and unknown labels through real Kafka and Redis: exact counts.

The ground truth is generated here; the window's confusion counts, the lifetime totals and the
refusal reasons must equal what is computed directly from it, also after a SIGKILL mid-run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from statsmodels.stats.proportion import proportion_confint

from alerting import metric_names as names
from alerting.evaluator import Evaluator
from alerting.quality_figures import QualityFigures
from alerting.snapshot import SnapshotCollector
from detectors.label_update import LABEL_DELAY_MAPPING
from driftline.config import Config
from tests.conftest import REPO, committed_offsets, end_offsets, produce, read_topic, write_config
from tests.integration.quality_traffic import (
    Expected,
    Prediction,
    as_plain,
    consume_events,
    consume_labels,
    label_message,
    label_messages_seen,
    series_counters,
    store_for,
)

MODEL = "fraud"
POSITIVE = "fraud"
HOUR_MS = 3_600_000
CONFUSION = [
    "labelled",
    "correct",
    f"true_positive@{POSITIVE}",
    f"false_positive@{POSITIVE}",
    f"false_negative@{POSITIVE}",
]


def _config(stack_config: Callable[..., Config]) -> Config:
    return stack_config(
        partitions=4,
        windows={"long_seconds": 4 * 3600},
        consumer={"batch_size": 500},
        models={
            MODEL: {
                "segments": ["region"],
                "labels": {
                    "positive_classes": [POSITIVE],
                    "horizon_seconds": 3 * 3600,
                    "record_grace_seconds": 3600,
                },
            }
        },
    )


class Scenario:
    """Predictions 2 to 2.5 h old; labels 0 s to 2 h after them, shuffled, 5 % sent twice, 3 %
    for event ids never predicted, 20 beyond the 3 h horizon, 5 undecodable, 3 of an unknown
    model."""

    def __init__(self, count: int, seed: int, now_ms: int) -> None:
        generator = np.random.default_rng(seed)
        self.now_ms = now_ms
        self.predictions: list[Prediction] = []
        run = uuid.uuid4().hex[:6]
        for index in range(count):
            said = POSITIVE if generator.random() < 0.3 else "legit"
            flipped = "legit" if said == POSITIVE else POSITIVE
            self.predictions.append(
                Prediction(
                    event_id=f"{run}-{index}",
                    ts_ms=now_ms - int(2.5 * HOUR_MS) + int(generator.integers(0, HOUR_MS // 2)),
                    version="v1",
                    deployment="stable",
                    confidence=round(float(generator.uniform(0.5, 1.0)), 4),
                    prediction=said,
                    truth=said if generator.random() < 0.85 else flipped,
                    region=str(generator.choice(["eu", "us", "apac"])),
                )
            )
        # Predictions whose labels come 3 h 25 min later: beyond the horizon, still on record.
        self.old = [
            Prediction(
                f"{run}-old-{i}",
                now_ms - int(3.5 * HOUR_MS) + i,
                "v1",
                "stable",
                0.9,
                "legit",
                "legit",
                "eu",
            )
            for i in range(20)
        ]
        self.expected = Expected()
        self.delays_s: list[float] = []
        labels: list[bytes] = []
        labelled = generator.random(count) < 0.9
        for prediction, has_label in zip(self.predictions, labelled, strict=True):
            if not has_label:
                continue
            delay_ms = int(generator.integers(0, 2 * HOUR_MS + 1))
            labels.append(
                label_message(prediction.event_id, prediction.truth, prediction.ts_ms + delay_ms)
            )
            self.expected.add(prediction, POSITIVE)
            self.delays_s.append(delay_ms / 1000)
        self.duplicates = round(0.05 * len(labels))
        labels += [labels[int(i)] for i in generator.choice(len(labels), self.duplicates, False)]
        self.unknown = round(0.03 * len(labels))
        labels += [
            label_message(f"ghost-{run}-{i}", POSITIVE, now_ms - HOUR_MS)
            for i in range(self.unknown)
        ]
        labels += [label_message(p.event_id, "legit", now_ms - 300_000) for p in self.old]
        labels += [b"{not json"] * 5
        labels += [
            label_message(
                f"other-{i}", "x", now_ms - 60_000, model="other", version="v1", prediction="x"
            )
            for i in range(3)
        ]
        order = generator.permutation(len(labels))
        self.labels = [labels[int(i)] for i in order]
        self.reasons = {
            "duplicate": self.duplicates,
            "beyond_horizon": len(self.old),
            "unknown_event_id": self.unknown,
            "bad_json": 5,
            "unknown_model": 3,
        }

    @property
    def events(self) -> list[Prediction]:
        return [*self.predictions, *self.old]

    def produce(self, config: Config, bootstrap: str) -> None:
        produce(
            bootstrap,
            config.topics.events,
            [p.event(MODEL) for p in self.events],
            [MODEL.encode()] * len(self.events),
        )
        # Keyed by event id: an event's duplicates may land on different partitions.
        produce(
            bootstrap,
            config.topics.labels,
            self.labels,
            [str(i % 97).encode() for i in range(len(self.labels))],
        )


def _refusals(store_totals: dict[str, int], invalid_totals: dict[str, int]) -> dict[str, int]:
    found: Counter[str] = Counter()
    for name, value in store_totals.items():
        if "|labels_refused@" in name:
            found[name.rsplit("@", 1)[1]] += value
    for name, value in invalid_totals.items():
        if name.startswith("labels_refused|"):
            found[name.split("|", 1)[1]] += value
    return dict(found)


def _check_exact(scenario: Scenario, config: Config, client: redis.Redis) -> None:
    store = store_for(config, client)
    [window] = store.read_windows(MODEL, [config.windows.long_seconds * 1000], scenario.now_ms)
    assert as_plain(series_counters(window, CONFUSION)) == as_plain(scenario.expected.counts)
    totals = store.totals(MODEL)
    assert {key: totals.get(f"{key}|labels", 0) for key in scenario.expected.counts} == {
        key: counts["labelled"] for key, counts in scenario.expected.counts.items()
    }
    assert _refusals(totals, store.totals("_invalid")) == scenario.reasons


def test_delayed_shuffled_duplicated_labels_count_exactly(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
) -> None:
    config = _config(stack_config)
    now_ms = int(time.time() * 1000)
    scenario = Scenario(4000, seed=11, now_ms=now_ms)
    scenario.produce(config, kafka_bootstrap)
    store = store_for(config, redis_client)
    consume_events(config, store, MODEL, len(scenario.events))
    consume_labels(config, store, [MODEL], len(scenario.labels), runtime)

    _check_exact(scenario, config, redis_client)
    dead = read_topic(kafka_bootstrap, config.topics.dead_letter, 5)
    assert sorted(dict(m.headers())["driftline.reason"] for m in dead) == [b"bad_json"] * 5

    # The evaluator's figures on the same windows, against reference computations.
    quality = QualityFigures(config, store)
    evaluator = Evaluator(
        config,
        store,
        SnapshotCollector(),
        contributors=[quality],
        hooks=[quality],
        clock_ms=lambda: now_ms,
    )
    snapshot = evaluator.tick()
    whole = scenario.expected.counts["v1|stable|"]
    labels = {
        "model": MODEL,
        "version": "v1",
        "deployment": "stable",
        "segment": "",
        "window": "long",
    }
    assert snapshot.value(names.ACCURACY, **labels) == whole["correct"] / whole["labelled"]
    low, high = proportion_confint(whole["correct"], whole["labelled"], method="wilson")
    assert abs(snapshot.value(names.ACCURACY_INTERVAL, **labels, bound="lower") - low) < 1e-9
    assert abs(snapshot.value(names.ACCURACY_INTERVAL, **labels, bound="upper") - high) < 1e-9
    tp, fp = whole[f"true_positive@{POSITIVE}"], whole[f"false_positive@{POSITIVE}"]
    assert snapshot.value(names.PRECISION, **labels, **{"class": POSITIVE}) == tp / (tp + fp)
    events_in_window = len(scenario.events)
    assert snapshot.value(names.LABEL_COVERAGE, **labels) == whole["labelled"] / events_in_window
    for q in (0.5, 0.95):
        exact = float(np.quantile(scenario.delays_s, q, method="lower"))
        sketched = snapshot.value(names.LABEL_DELAY, **labels, quantile=str(q))
        assert abs(sketched - exact) <= LABEL_DELAY_MAPPING.relative_accuracy * exact + 1e-3
    refused = {
        reason: snapshot.value(names.LABELS_REFUSED_TOTAL, model=model, reason=reason)
        for model, reason in [
            (MODEL, "duplicate"),
            (MODEL, "beyond_horizon"),
            ("", "unknown_event_id"),
            ("", "bad_json"),
            ("", "unknown_model"),
        ]
    }
    assert refused == scenario.reasons


def _start_label_consumer(config_path: Path, runtime: str) -> subprocess.Popen[bytes]:
    log_path = config_path.parent / f"labels-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftline.cli",
                "consume-labels",
                "--config",
                str(config_path),
                "--runtime",
                runtime,
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def test_sigkilled_label_consumer_counts_exactly(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = _config(stack_config)
    now_ms = int(time.time() * 1000)
    scenario = Scenario(30_000, seed=12, now_ms=now_ms)
    scenario.produce(config, kafka_bootstrap)
    store = store_for(config, redis_client)
    consume_events(config, store, MODEL, len(scenario.events))

    config_path = write_config(config, tmp_path)
    total = len(scenario.labels)
    process = _start_label_consumer(config_path, runtime)
    try:
        deadline = time.monotonic() + 120
        while label_messages_seen(store, [MODEL]) < total // 4:
            assert time.monotonic() < deadline, "the label consumer made no progress"
            assert process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert 0 < label_messages_seen(store, [MODEL]) < total, "the kill must land mid-run"
        process = _start_label_consumer(config_path, runtime)
        ends = end_offsets(kafka_bootstrap, config.topics.labels, 4)
        group = f"{config.kafka.group_id}-labels"
        deadline = time.monotonic() + 120
        while [
            max(o, 0) for o in committed_offsets(kafka_bootstrap, group, config.topics.labels, 4)
        ] != ends:
            assert time.monotonic() < deadline, "label offsets never fully committed"
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert label_messages_seen(store, [MODEL]) == total
    _check_exact(scenario, config, redis_client)
