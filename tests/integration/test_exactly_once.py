"""Exactly-once windows through real Kafka and Redis, with a consumer SIGKILLed mid-run.

``fraud`` has a reference, so its events also go through the sequential test, whose state must
come out as if every event had been fed once, in order, by one uninterrupted consumer.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from click.testing import CliRunner

from detectors.reference import Reference
from detectors.reference_builder import ReferenceBuilder
from detectors.sequential_detector import PartitionState, SequentialDetector
from detectors.series import Metric, Series
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from detectors.window_summary import summarise
from driftline.cli import layout_from_config, main
from driftline.config import Config
from driftline.events import InferenceEvent, decode_event, decode_features
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
    reference = _import_reference(config_path, tmp_path)
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

    _check_sequential_state(
        store, config, reference, [v for v, k in zip(values, keys, strict=True) if k == b"fraud"]
    )


def _import_reference(config_path: Path, tmp_path: Path) -> Reference:
    """A reference of ``fraud`` (v0 traffic), imported into Redis before the consumers start."""
    builder = ReferenceBuilder("fraud")
    spec = TrafficSpec("fraud", "v0", feature_count=3)
    builder.add(
        decode_event(raw)  # type: ignore[misc]
        for raw, _ in synthetic_events(spec, 5_000, start_ms=0, rate_per_s=100, seed=90)
    )
    reference = builder.build(created_at_ms=0)
    assert len(reference.sequential_features) == 3
    path = tmp_path / "fraud-reference.json"
    path.write_text(reference.to_json(), encoding="utf-8")
    result = CliRunner().invoke(
        main, ["baseline", "import", "--config", str(config_path), str(path)]
    )
    assert result.exit_code == 0, result.output
    return reference


def _check_sequential_state(
    store: RedisWindowStore, config: Config, reference: Reference, produced: list[bytes]
) -> None:
    """The stored state equals one uninterrupted pass over ``produced`` (fraud's events, in the
    order of their one partition): an event fed twice or skipped would move every running mean."""
    states = [s for s in store.sequential_states("fraud", range(4)).values() if s is not None]
    assert len(states) == 1, "fraud's events are keyed to one partition"
    stored = PartitionState.from_json(states[0])
    assert stored.offset == len(produced) - 1 and stored.field_tag == reference.field_tag
    policy = config.drift.sequential_policy()
    assert policy is not None
    features = reference.sequential_features
    detector = SequentialDetector.for_features(features, policy)
    events = [event for event in map(decode_event, produced) if isinstance(event, InferenceEvent)]
    for version in VERSIONS:
        mine = [event for event in events if event.version == version]
        rows = [decode_features(event.features) for event in mine]
        values = reference.numeric_values(rows)[:, reference.sequential_columns]  # type: ignore[arg-type]
        expected = detector.start()
        detector.advance(expected, values, np.array([event.ts for event in mine], dtype=np.int64))
        found = stored.series[Series(version, "stable").key]
        assert (found.events, found.level) == (expected.events, expected.level), version
        for part in ("mean", "variance", "sums", "traffic"):
            assert np.allclose(
                getattr(found, part), getattr(expected, part), rtol=1e-9, atol=1e-9
            ), (
                version,
                part,
            )


def test_a_sequential_state_contradicting_its_checkpoint_stops_the_consumer_clearly(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A state whose offset disagrees with the checkpoint (edited or restored by hand) was refused
    as applied elsewhere, again and again: the consumer spun at full CPU, committed nothing and
    never went idle."""
    config = stack_config(partitions=1)
    config_path = write_config(config, tmp_path)
    _import_reference(config_path, tmp_path)
    spec = TrafficSpec("fraud", "v1", feature_count=3)
    start_ms = int(time.time() * 1000) - 60_000
    events = [
        raw for raw, _ in synthetic_events(spec, 400, start_ms=start_ms, rate_per_s=10, seed=3)
    ]
    consume = ["consume", "--config", str(config_path), "--exit-when-idle", "2"]
    produce(kafka_bootstrap, config.topics.events, events[:200], [b"fraud"] * 200)
    first = CliRunner().invoke(main, consume)
    assert first.exit_code == 0, first.output
    sequential = KeySchema(config.redis.key_prefix).sequential_states("fraud")
    redis_client.hset(sequential, "state:0", "{}")  # a state of offset -1, behind its checkpoint
    produce(kafka_bootstrap, config.topics.events, events[200:], [b"fraud"] * 200)
    second = CliRunner().invoke(main, consume)
    assert second.exit_code == 1, second.output
    assert "model fraud: the store refused a batch 3 times" in second.output
    group = config.kafka.group_id
    assert committed_offsets(kafka_bootstrap, group, config.topics.events, 1) == [200]
    redis_client.delete(sequential)  # what the message says to do
    third = CliRunner().invoke(main, consume)
    assert third.exit_code == 0, third.output
    assert committed_offsets(kafka_bootstrap, group, config.topics.events, 1) == [400]
    assert _store(config, redis_client).totals("fraud")[f"v1|stable||{Metric.EVENTS}"] == 400
