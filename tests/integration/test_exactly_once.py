"""Exactly-once windows through real Kafka and Redis, with a consumer SIGKILLed mid-run."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from detectors.series import Metric
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from detectors.window_summary import summarise
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import (
    committed_offsets,
    end_offsets,
    produce,
    start_consumer,
    write_config,
)

MODELS = ("fraud", "churn", "ranker")
VERSIONS = ("v1", "v2")
# The Faust runtime moves about a tenth of the confluent one's events per second
# (docs/runtimes.md): a fifth of the events keeps its run short, and the kill still lands mid-run.
EVENTS = {"confluent": 100_000, "faust": 20_000}


def _store(config: Config, client: redis.Redis) -> RedisWindowStore:
    return RedisWindowStore(client, layout_from_config(config), KeySchema(config.redis.key_prefix))


def _applied(store: RedisWindowStore) -> int:
    return sum(
        count
        for model in MODELS
        for name, count in store.totals(model).items()
        if name.endswith(f"||{Metric.EVENTS}")
    )


def test_sigkilled_consumer_counts_every_event_once(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = stack_config(partitions=4, consumer={"batch_size": 1000})
    now_ms = int(time.time() * 1000)
    values: list[bytes] = []
    keys: list[bytes] = []
    expected: Counter[tuple[str, str]] = Counter()
    per_stream = EVENTS[runtime] // (len(MODELS) * len(VERSIONS))
    for seed, (model, version) in enumerate((m, v) for m in MODELS for v in VERSIONS):
        spec = TrafficSpec(model, version, feature_count=3)
        for raw, _ in synthetic_events(
            spec, per_stream, start_ms=now_ms - 60_000, rate_per_s=per_stream / 50, seed=seed
        ):
            values.append(raw)
            keys.append(model.encode())
            expected[(model, version)] += 1
    produced = len(values)
    assert produced >= EVENTS[runtime] - 10
    produce(kafka_bootstrap, config.topics.events, values, keys)

    config_path = write_config(config, tmp_path)
    store = _store(config, redis_client)
    first = start_consumer(config_path, runtime=runtime)
    second = start_consumer(config_path, runtime=runtime)
    try:
        deadline = time.monotonic() + 120
        while _applied(store) < produced // 4:
            assert time.monotonic() < deadline, "consumers made no progress"
            assert first.poll() is None and second.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert 0 < _applied(store) < produced, "the kill must land mid-run"
        first = start_consumer(config_path, runtime=runtime)

        ends = end_offsets(kafka_bootstrap, config.topics.events, 4)
        deadline = time.monotonic() + 180
        # A partition no model hashed to has nothing to commit: its committed offset stays unset.
        while [
            max(offset, 0)
            for offset in committed_offsets(
                kafka_bootstrap, config.kafka.group_id, config.topics.events, 4
            )
        ] != ends:
            assert time.monotonic() < deadline, "offsets never fully committed"
            time.sleep(0.5)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        exit_codes = [process.wait(60) for process in (first, second)]
    assert exit_codes == [0, 0], "SIGTERM must finish the batch and exit 0"

    assert _applied(store) == produced
    for model in MODELS:
        totals = store.totals(model)
        for version in VERSIONS:
            assert totals[f"{version}|stable||{Metric.EVENTS}"] == expected[(model, version)]
        # The long window holds every event too (they are all within the last hour).
        [long_window] = store.read_windows(model, [config.windows.long_seconds * 1000], now_ms)
        by_series = summarise(long_window)
        assert {s.version: w.events for s, w in by_series.items()} == {
            version: expected[(model, version)] for version in VERSIONS
        }
