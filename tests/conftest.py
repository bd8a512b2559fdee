"""Shared fixtures: the real local stack (started by ``deploy/local/stack.sh``), isolated per test.

Every test gets its own topics, consumer group and Redis key prefix, so tests never see each
other's data and need no cleanup between them. Integration tests fail, not skip, when the stack
is down: a green run must mean the real thing was exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumers.kafka_queries import ask_kafka, create_topics
from detectors.stores.redis_store import connect_redis
from driftline import time_ordered_lines
from driftline.config import Config, parse_config

REPO = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _env("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _env("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    # A redis+cluster:// URL runs the whole suite against Redis Cluster (make test-cluster).
    client = connect_redis(redis_url)
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.list_topics(timeout=30)
    return admin


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def sorted_runs_written(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every sorted run ``driftline backtest`` writes to disk during the test."""
    written: list[Path] = []
    write_run = time_ordered_lines._write_run

    def recording(run: list[tuple[int, bytes]], path: Path) -> Path:
        written.append(write_run(run, path))
        return path

    monkeypatch.setattr(time_ordered_lines, "_write_run", recording)
    return written


def create_ready_topic(admin: AdminClient, topic: str, partitions: int, **topic_config: str) -> str:
    """Create ``topic`` and wait until metadata shows all its partitions."""
    create_topics(admin, [NewTopic(topic, partitions, 1, config=topic_config)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
        if metadata and metadata.error is None and len(metadata.partitions) == partitions:
            return topic
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic} not ready")


@pytest.fixture
def make_topic(kafka_admin: AdminClient, unique: str) -> Callable[..., str]:
    def create(name: str, partitions: int = 4, **topic_config: str) -> str:
        return create_ready_topic(kafka_admin, f"test.{unique}.{name}", partitions, **topic_config)

    return create


@pytest.fixture
def stack_config(
    kafka_bootstrap: str, redis_url: str, make_topic: Callable[..., str], unique: str
) -> Callable[..., Config]:
    """A config on fresh topics, group and key prefix; keyword overrides are merged in."""

    def build(partitions: int = 4, **overrides: Any) -> Config:
        data: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": f"test-{unique}",
                # A SIGKILLed member is noticed after 6 s (the broker's minimum), not 45 s.
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
            },
            "redis": {"url": redis_url, "key_prefix": f"t{unique}"},
            "topics": {
                # Room for the 1 MB payloads the dead-letter tests send.
                "events": make_topic("events", partitions, **{"max.message.bytes": "2000000"}),
                "labels": make_topic("labels", partitions),
                "dead_letter": make_topic("dead-letter", 1),
                "control": make_topic("control", 1),
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return parse_config(data)

    return build


def write_config(config: Config, directory: Path) -> Path:
    path = directory / "driftline.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


def produce(
    bootstrap: str, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "message.max.bytes": 2_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for index, value in enumerate(values):
        key = keys[index] if keys is not None else None
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in ask_kafka(lambda: consumer.committed(wanted, timeout=30))]
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every message of ``topic`` from the beginning, until ``expected`` arrived (or time out)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        return messages
    finally:
        consumer.close()


def wait_until_committed(
    bootstrap: str, group: str, topic: str, partitions: int, timeout_s: float = 120
) -> None:
    """Wait until the group has committed every partition's end offset.

    A partition that never received a message has nothing to commit: its committed offset stays
    unset (negative) and counts as 0.
    """
    ends = end_offsets(bootstrap, topic, partitions)
    deadline = time.monotonic() + timeout_s
    while True:
        committed = [max(o, 0) for o in committed_offsets(bootstrap, group, topic, partitions)]
        if committed == ends:
            return
        assert time.monotonic() < deadline, f"committed {committed} never reached {ends}"
        time.sleep(0.5)


def end_offsets(bootstrap: str, topic: str, partitions: int, timeout_s: float = 60) -> list[int]:
    """The end offset of each partition (asked again while a restarted broker settles)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets-reader"})
    try:
        return ask_kafka(
            lambda: [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in range(partitions)
            ],
            deadline_s=timeout_s,
        )
    finally:
        consumer.close()


RUNTIMES = ("confluent", "faust")


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """A test (or fixture) taking ``runtime`` runs once per consumer runtime, same assertions."""
    runtime_name: str = request.param
    return runtime_name


def event_consumer(runtime: str, config: Config, store: Any) -> Any:
    """The in-process consumer of ``runtime``; both offer ``run(max_idle_s=)``, ``stop()``,
    ``events_applied`` and ``batches``."""
    if runtime == "faust":
        from consumers.faust_app import FaustEventConsumer

        return FaustEventConsumer(config, store)
    from consumers.kafka_consumer import EventConsumer

    return EventConsumer(config, store)


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Processes a test started and did not stop (it failed midway) are killed after it."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start_consumer(
    config_path: Path, *extra: str, runtime: str = "confluent"
) -> subprocess.Popen[bytes]:
    """A ``driftline consume`` process; its log goes to a file beside the config."""
    log_path = config_path.parent / f"consumer-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftline.cli",
                "consume",
                "--config",
                str(config_path),
                "--runtime",
                runtime,
                *extra,
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    _started.append(process)
    return process


def wait_for_log(process: subprocess.Popen[bytes], text: str, timeout_s: float = 60) -> None:
    """Wait until a started process has logged ``text`` (e.g. that it joined its group)."""
    deadline = time.monotonic() + timeout_s
    path: Path = process.log_path  # type: ignore[attr-defined]
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, f"process exited: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.1)
