"""Faults survived with real processes killed and restarted by the tests."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.label_consumer import labels_group
from consumers.window_writer import BAD_EVENTS_FIELD, INVALID_EVENTS_MODEL, WindowWriter
from detectors.label_update import LABELS_CHECKPOINT_SPACE
from detectors.stores.memory_store import MemoryWindowStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import (
    REPO,
    committed_offsets,
    end_offsets,
    produce,
    start_consumer,
    wait_for_log,
    wait_until_committed,
    write_config,
)

KILLS = 20
DRIFTLINE = (sys.executable, "-m", "driftline.cli")


def test_twenty_random_sigkills_lose_and_double_count_nothing(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    unique: str,
) -> None:
    # Static membership: a restarted consumer takes its partitions back at once instead of
    # waiting out the session timeout, which is also what a production restart wants.
    config = stack_config(
        partitions=3,
        consumer={"batch_size": 200},
        kafka={"consumer": {"group.instance.id": f"killed-{unique}", "session.timeout.ms": 6000}},
    )
    now_ms = int(time.time() * 1000)
    values: list[bytes] = []
    for seed, model in enumerate(("fraud", "churn", "ranker")):
        stream = synthetic_events(
            TrafficSpec(model, "v1", feature_count=2),
            30_000,
            start_ms=now_ms - 100_000,
            rate_per_s=400,
            seed=seed,
        )
        values += [raw for raw, _ in stream]
    bad = [b"{broken json" for _ in range(300)]
    random.Random(3).shuffle(mixed := values + bad)
    produce(kafka_bootstrap, config.topics.events, mixed)

    config_path = write_config(config, tmp_path)
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )

    def applied() -> int:
        return sum(sum(store.totals(model).values()) for model in ("fraud", "churn", "ranker"))

    rng = random.Random(11)
    kills = 0
    process = start_consumer(config_path)
    deadline = time.monotonic() + 240
    while kills < KILLS:
        # Kill at a random point after the restarted consumer has applied something, so every
        # kill lands mid-stream (between any two steps of the checkpoint order), not at start-up.
        before = applied()
        while applied() == before:
            assert time.monotonic() < deadline, f"no progress after {kills} kills"
            time.sleep(0.01)
        # A 200-event batch takes a few milliseconds, so 0-50 ms still lands anywhere in the
        # checkpoint order while leaving events for all twenty kills on a fast machine.
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
        assert applied() < len(values), f"the run ended after only {kills} kills"
        process = start_consumer(config_path)
    wait_until_committed(kafka_bootstrap, config.kafka.group_id, config.topics.events, 3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0

    for model in ("fraud", "churn", "ranker"):
        assert store.totals(model) == {"v1|stable||events": 30_000}, model
    assert store.totals(INVALID_EVENTS_MODEL) == {f"{BAD_EVENTS_FIELD}bad_json": 300}


def test_rebalances_while_producing_lose_nothing(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Four consumers on twelve partitions join and leave while events keep arriving."""
    config = stack_config(partitions=12, consumer={"batch_size": 500})
    config_path = write_config(config, tmp_path)
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    now_ms = int(time.time() * 1000)
    models = [f"model{i}" for i in range(8)]
    chunks = []
    for seed, model in enumerate(models):
        stream = synthetic_events(
            TrafficSpec(model, "v1", feature_count=2),
            6000,
            start_ms=now_ms - 60_000,
            rate_per_s=200,
            seed=seed,
        )
        chunks.append([(raw, model.encode()) for raw, _ in stream])
    messages = [pair for group in zip(*chunks, strict=True) for pair in group]

    consumers = [start_consumer(config_path)]
    rng = random.Random(5)
    for step, start in enumerate(range(0, len(messages), 4000)):
        part = messages[start : start + 4000]
        produce(kafka_bootstrap, config.topics.events, [v for v, _ in part], [k for _, k in part])
        if step % 3 == 2 and len(consumers) > 1:
            leaving = consumers.pop(rng.randrange(len(consumers)))
            leaving.send_signal(signal.SIGTERM if step % 2 else signal.SIGKILL)
            leaving.wait(30)
        elif len(consumers) < 4:
            consumers.append(start_consumer(config_path))
        time.sleep(0.5)

    wait_until_committed(kafka_bootstrap, config.kafka.group_id, config.topics.events, 12)
    for process in consumers:
        wait_for_log(process, "assigned")  # a SIGTERM during start-up would kill, not stop, it
        process.send_signal(signal.SIGTERM)
    assert [process.wait(60) for process in consumers] == [0] * len(consumers)
    for model in models:
        assert store.totals(model) == {"v1|stable||events": 6000}, model


def test_commit_lost_with_its_consumer_is_made_by_the_next_owner(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A consumer applied batches to the store and died before committing them to Kafka: the
    next owner resumes from the store's hint, and must also commit it while no new message
    comes, or the group's lag would never clear."""
    config = stack_config(partitions=2, consumer={"batch_size": 500})
    config_path = write_config(config, tmp_path)
    now_ms = int(time.time() * 1000)
    values = [
        raw
        for raw, _ in synthetic_events(
            TrafficSpec("fraud", "v1", feature_count=2),
            3000,
            start_ms=now_ms - 60_000,
            rate_per_s=100,
            seed=1,
        )
    ]
    produce(kafka_bootstrap, config.topics.events, values, [b"a", b"b"] * 1500)
    topic, group = config.topics.events, config.kafka.group_id
    ends = end_offsets(kafka_bootstrap, topic, 2)

    consumer = start_consumer(config_path, runtime=runtime)
    wait_until_committed(kafka_bootstrap, group, topic, 2)
    wait_for_log(consumer, "assigned")
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(60) == 0

    # What the dead consumer left: the store holds everything, Kafka's commit lags behind.
    rewinder = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        rewinder.commit(
            offsets=[TopicPartition(topic, p, end // 3) for p, end in enumerate(ends)],
            asynchronous=False,
        )
    finally:
        rewinder.close()
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == [end // 3 for end in ends]

    consumer = start_consumer(config_path, runtime=runtime)
    wait_until_committed(kafka_bootstrap, group, topic, 2, timeout_s=60)
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(60) == 0
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    assert store.totals("fraud") == {"v1|stable||events": 3000}


def _consume_until_idle(command: str, config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRIFTLINE, command, "--config", str(config_path), "--exit-when-idle", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["consume", "consume-labels"])
def test_store_positions_past_the_topics_end_stop_the_consumer_before_it_skips_anything(
    command: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """As after the topic is deleted and created again: the store remembers offsets up to 5,000,
    the new partition holds 300. The consumer started there, Kafka reset it to the beginning, and
    every event was dropped as already applied, and committed, without a word."""
    config = stack_config(partitions=1)
    config_path = write_config(config, tmp_path)
    if command == "consume":
        topic, group = config.topics.events, config.kafka.group_id
        spec = TrafficSpec("fraud", "v1", feature_count=2)
        now_ms = int(time.time() * 1000)
        values = [
            raw for raw, _ in synthetic_events(spec, 300, start_ms=now_ms, rate_per_s=100, seed=2)
        ]
    else:
        topic, group = config.topics.labels, labels_group(config)
        values = [json.dumps({"event_id": f"e{n}", "label": "yes"}).encode() for n in range(300)]
    produce(kafka_bootstrap, topic, values, [b"fraud"] * 300)
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    store.save_consumer_positions(group, topic, {0: 5000})
    space = "" if command == "consume" else LABELS_CHECKPOINT_SPACE
    redis_client.hset(KeySchema(config.redis.key_prefix).checkpoints("fraud", space), "0", 4999)
    done = _consume_until_idle(command, config_path)
    assert done.returncode == 1, done.stderr
    expected = f"Error: {topic} partition 0: the store has applied it up to offset 5000, but it"
    assert f"{expected} ends at 300" in done.stderr
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == [OFFSET_INVALID]  # none
    assert store.totals("fraud") == {}
    # docs/operations.md, "A recreated topic": forget its positions and checkpoints, restart.
    prefix, suffix = config.redis.key_prefix, f":{space}" if space else ""
    redis_client.delete(
        f"{prefix}:{{consumer:{group}}}:positions:{topic}",
        *redis_client.scan_iter(match=f"{prefix}:*:checkpoints{suffix}"),
    )
    done = _consume_until_idle(command, config_path)
    assert done.returncode == 0, done.stderr
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == [300]
    if command == "consume":
        assert store.totals("fraud") == {"v1|stable||events": 300}


@pytest.mark.parametrize("consumer_running", [False, True], ids=["restarted", "running"])
def test_redis_restarted_empty_windows_are_rebuilt(
    consumer_running: bool,
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """Redis loses everything; the consumer notices (no resume hint on assignment, or checkpoints
    below what it applied while running), seeks back one long window by timestamp and replays:
    the windows then equal those of an in-memory store fed the same events."""
    environment = {
        **os.environ,
        "DRIFTLINE_REDIS_PORT": str(SPARE_REDIS_PORT),
        "DRIFTLINE_STACK_DIR": str(tmp_path / "spare-stack"),
    }

    def spare_redis(*arguments: str) -> None:
        subprocess.run(
            ["bash", str(REPO / "deploy/local/stack.sh"), *arguments, "redis"],
            env=environment,
            check=True,
            capture_output=True,
            timeout=120,
        )

    spare_redis("up")
    try:
        config = stack_config(
            partitions=2,
            consumer={"batch_size": 300},
            redis={"url": f"redis://127.0.0.1:{SPARE_REDIS_PORT}/0"},
            windows={
                "bucket_seconds": 10,
                "rollup_seconds": 60,
                "short_seconds": 60,
                "long_seconds": 600,
            },
        )
        config_path = write_config(config, tmp_path)
        now_ms = int(time.time() * 1000)
        first, second = [], []
        for seed, model in enumerate(("fraud", "churn")):
            stream = [
                raw
                for raw, _ in synthetic_events(
                    TrafficSpec(model, "v1", feature_count=2),
                    3000,
                    start_ms=now_ms - 290_000,
                    rate_per_s=10,
                    seed=seed,
                )
            ]
            first += stream[:2000]
            second += stream[2000:]
        produce(kafka_bootstrap, config.topics.events, first)
        consumer = start_consumer(config_path, runtime=runtime)
        wait_until_committed(kafka_bootstrap, config.kafka.group_id, config.topics.events, 2)
        if not consumer_running:
            wait_for_log(consumer, "assigned")
            consumer.send_signal(signal.SIGTERM)
            assert consumer.wait(60) == 0

        spare_redis("down", "--wipe")  # Redis runs without persistence: everything is gone
        spare_redis("up")
        client = redis.Redis(port=SPARE_REDIS_PORT, decode_responses=True)
        assert client.dbsize() == 0

        produce(kafka_bootstrap, config.topics.events, second)
        if not consumer_running:
            consumer = start_consumer(config_path, runtime=runtime)
        wait_until_committed(kafka_bootstrap, config.kafka.group_id, config.topics.events, 2)
        store = RedisWindowStore(
            client, layout_from_config(config), KeySchema(config.redis.key_prefix)
        )
        deadline = time.monotonic() + 60
        while (
            sum(w for m in ("fraud", "churn") for w in _window_events(store, m, config)) < 2 * 3000
        ):
            assert time.monotonic() < deadline, "the windows were not rebuilt"
            time.sleep(0.5)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(60) == 0
        assert (
            "rebuilding" in consumer.log_path.read_text()
            or "replaying" in consumer.log_path.read_text()
        )  # type: ignore[attr-defined]

        expected = MemoryWindowStore(layout_from_config(config))
        assembler = BatchAssembler(config, expected)
        writer = WindowWriter(expected, binning_from_config(config))
        batch = assembler.assemble([0] * 6000, list(range(6000)), first + second, now_ms)
        writer.write_all(list(batch.models.values()), now_ms)
        windows_ms = [config.windows.short_seconds * 1000, config.windows.long_seconds * 1000]
        read_ms = int(time.time() * 1000)
        for model in ("fraud", "churn"):
            assert store.read_windows(model, windows_ms, read_ms) == expected.read_windows(
                model, windows_ms, read_ms
            ), model
    finally:
        spare_redis("down", "--wipe")


SPARE_REDIS_PORT = 16391


def _window_events(store: RedisWindowStore, model: str, config: Config) -> list[int]:
    [long_window] = store.read_windows(
        model, [config.windows.long_seconds * 1000], int(time.time() * 1000)
    )
    return [count for name, count in long_window.items() if name.endswith("||events")]
