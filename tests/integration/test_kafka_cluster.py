"""A 3-broker KRaft cluster with replication factor 3: a broker killed mid-stream loses nothing."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumers.kafka_queries import create_topics
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import parse_config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import start_consumer, wait_for_log, wait_until_committed, write_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "deploy/local/kafka-cluster.sh")
EVENTS = 30_000


def _cluster(*arguments: str) -> str:
    result = subprocess.run(
        ["bash", SCRIPT, *arguments], check=True, capture_output=True, text=True, timeout=180
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def cluster_bootstrap() -> Iterator[str]:
    _cluster("up")
    yield _cluster("bootstrap")
    _cluster("down")


def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    cluster_bootstrap: str,
    redis_url: str,
    redis_client: redis.Redis,
    unique: str,
    tmp_path: Path,
) -> None:
    topic = f"cluster.{unique}.events"
    admin = AdminClient({"bootstrap.servers": cluster_bootstrap})
    create_topics(
        admin,
        [
            NewTopic(topic, 6, 3, config={"min.insync.replicas": "2"}),
            NewTopic(f"{topic}.dead-letter", 1, 3),
        ],
    )
    config = parse_config(
        {
            "kafka": {
                "bootstrap_servers": cluster_bootstrap,
                "group_id": f"cluster-{unique}",
                "consumer": {"session.timeout.ms": 6000},
            },
            "redis": {"url": redis_url, "key_prefix": f"kc{unique}"},
            "topics": {"events": topic, "dead_letter": f"{topic}.dead-letter"},
            "consumer": {"batch_size": 500},
        }
    )
    consumer = start_consumer(write_config(config, tmp_path))
    wait_for_log(consumer, "assigned")

    now_ms = int(time.time() * 1000)
    models = ("fraud", "churn", "ranker")
    values = [
        (raw, model.encode())
        for seed, model in enumerate(models)
        for raw, _ in synthetic_events(
            TrafficSpec(model, "v1", feature_count=2),
            EVENTS // 3,
            start_ms=now_ms - 60_000,
            rate_per_s=200,
            seed=seed,
        )
    ]
    producer = Producer(
        {
            "bootstrap.servers": cluster_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 10,
        }
    )
    failures: list[str] = []

    def produce_slowly() -> None:
        for index, (value, key) in enumerate(values):
            producer.produce(
                topic,
                value=value,
                key=key,
                on_delivery=lambda e, _m: e is None or failures.append(str(e)),
            )
            if index % 500 == 0:
                producer.poll(0)
                time.sleep(0.05)
        producer.flush(120)

    sender = threading.Thread(target=produce_slowly)
    sender.start()
    time.sleep(1.0)
    _cluster("kill-node", "2")  # SIGKILL: no clean shutdown, leadership moves
    time.sleep(3.0)
    _cluster("start-node", "2")
    sender.join(180)
    assert not failures, failures[:3]

    wait_until_committed(cluster_bootstrap, config.kafka.group_id, topic, 6, timeout_s=180)
    assert consumer.poll() is None, "the consumer survived the broker failure"
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(60) == 0
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    for model in models:
        assert store.totals(model) == {"v1|stable||events": EVENTS // 3}, model
