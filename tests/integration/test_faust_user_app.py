"""A team's own Faust app, written as a user would, with driftline's agent mounted in it.

The app runs as Faust apps run (``python team_app.py worker``), keeps doing its own work, and
fills exactly the windows the confluent-kafka runtime fills from the same events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from consumers.window_writer import INVALID_EVENTS_MODEL
from detectors.series import Metric
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.publisher import Publisher
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import REPO, event_consumer, produce, read_topic, write_config

TEAM_APP = '''
"""The payments team's Faust worker: it forwards orders, and now monitors its models too."""

import os

import faust

from consumers.faust_app import mount_driftline
from driftline.config import load_config

config = load_config(os.environ["DRIFTLINE_CONFIG"])

app = faust.App(
    config.kafka.group_id,
    broker=f"kafka://{config.kafka.bootstrap_servers}",
    store="memory://",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,  # tests run side by side; a real worker would keep its web port
)
orders = app.topic(os.environ["ORDERS_TOPIC"], value_type=bytes, value_serializer="raw")
receipts = app.topic(os.environ["RECEIPTS_TOPIC"], value_type=bytes, value_serializer="raw")


@app.agent(orders)
async def issue_receipts(stream):
    async for order in stream:
        await receipts.send(value=b"receipt:" + order)


mount_driftline(app, config)

if __name__ == "__main__":
    app.main()
'''

MODELS = ("fraud", "churn")
EVENTS_FIELD = f"v1|stable||{Metric.EVENTS}"


def _store(config: Config, client: redis.Redis) -> RedisWindowStore:
    return RedisWindowStore(client, layout_from_config(config), KeySchema(config.redis.key_prefix))


def test_team_app_with_mounted_agent_fills_the_same_windows(
    stack_config: Callable[..., Config],
    make_topic: Callable[[str, int], str],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = stack_config(
        partitions=3,
        consumer={"batch_size": 700},
        models={"fraud": {"segments": ["region"]}},
    )
    orders, receipts = make_topic("orders", 2), make_topic("receipts", 1)
    now_ms = int(time.time() * 1000)
    values: list[bytes] = []
    keys: list[bytes] = []
    for seed, model in enumerate(MODELS):
        spec = TrafficSpec(
            model, "v1", feature_count=3, segments=[("region", ["eu", "us", "apac"])]
        )
        stream = synthetic_events(spec, 2500, start_ms=now_ms - 90_000, rate_per_s=30, seed=seed)
        for raw, _ in stream:
            values.append(raw)
            keys.append(model.encode())
    values += [b"{not json", b'{"event_id": "x", "ts": 1, "model": "fraud"}']
    keys += [b"fraud", b"fraud"]
    # Published as a team's service would: driftline's publisher, whose batches are lz4-compressed.
    publisher = Publisher(kafka_bootstrap, config.topics.events)
    for value, key in zip(values, keys, strict=True):
        publisher.publish_raw(value, key=key)
    assert publisher.flush() == 0
    produce(kafka_bootstrap, orders, [f"order-{i}".encode() for i in range(300)])

    app_path = tmp_path / "team_app.py"
    app_path.write_text(TEAM_APP, encoding="utf-8")
    log_path = tmp_path / "team_app.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DRIFTLINE_CONFIG": str(write_config(config, tmp_path)),
        "ORDERS_TOPIC": orders,
        "RECEIPTS_TOPIC": receipts,
    }
    store = _store(config, redis_client)

    def counted() -> int:
        events = sum(store.totals(model).get(EVENTS_FIELD, 0) for model in MODELS)
        return events + sum(store.totals(INVALID_EVENTS_MODEL).values())

    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, str(app_path), "worker", "--loglevel", "info"],
            cwd=tmp_path,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while counted() < len(values):
            assert worker.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the mounted agent made no progress"
            time.sleep(0.1)
        issued = read_topic(kafka_bootstrap, receipts, 300)
    finally:
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(60)
    assert exit_code == 0, log_path.read_text()[-3000:]
    assert sorted(m.value() for m in issued) == sorted(
        f"receipt:order-{i}".encode() for i in range(300)
    ), "the team's own agent keeps working beside driftline's"

    # The same events through the confluent-kafka runtime, into a store of their own.
    reference_config = config.model_copy(
        update={
            "kafka": config.kafka.model_copy(update={"group_id": f"{config.kafka.group_id}-ref"}),
            "redis": config.redis.model_copy(update={"key_prefix": f"{config.redis.key_prefix}r"}),
            "topics": config.topics.model_copy(update={"dead_letter": make_topic("dlq-ref", 1)}),
        }
    )
    reference = _store(reference_config, redis_client)
    event_consumer("confluent", reference_config, reference).run(max_idle_s=3)

    window_ms = [config.windows.short_seconds * 1000, config.windows.long_seconds * 1000]
    for model in MODELS:
        assert store.totals(model) == reference.totals(model)
        assert store.totals(model)[EVENTS_FIELD] == 2500
        assert store.read_windows(model, window_ms, now_ms) == reference.read_windows(
            model, window_ms, now_ms
        )
    assert store.totals(INVALID_EVENTS_MODEL) == reference.totals(INVALID_EVENTS_MODEL)
    assert sum(store.totals(INVALID_EVENTS_MODEL).values()) == 2
