"""Against a real 3-node Redis Cluster: hash tags keep each model's scripts on one slot.

The cluster is started by ``deploy/local/redis-cluster.sh`` (the whole suite can also run against
it: ``make test-cluster``); here the core guarantees are checked on it directly: the cluster store
gives the same windows as the in-memory store, a consumer run counts every event once, and labels
join predictions whose records (no hash tag) are spread over every node.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from consumers.kafka_consumer import EventConsumer
from detectors.stores.memory_store import MemoryWindowStore
from detectors.stores.redis_store import RedisWindowStore, connect_redis
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import produce
from tests.integration.quality_traffic import (
    Expected,
    Prediction,
    as_plain,
    consume_events,
    consume_labels,
    label_message,
    series_counters,
)
from tests.integration.test_window_stores import CONFIG, _write

REPO = Path(__file__).resolve().parents[2]
PORT = 17001


@pytest.fixture(scope="module")
def cluster() -> Iterator[redis.Redis]:
    # Under `make test-cluster` the whole suite runs on this cluster: stopping it here would
    # pull it from under the tests that come after, so only a cluster started here is stopped.
    already_up = _answers(PORT)
    subprocess.run(
        ["bash", str(REPO / "deploy/local/redis-cluster.sh"), "up"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    client = connect_redis(f"redis+cluster://127.0.0.1:{PORT}/0")
    yield client
    client.close()
    if not already_up:
        subprocess.run(
            ["bash", str(REPO / "deploy/local/redis-cluster.sh"), "down"],
            check=False,
            capture_output=True,
            timeout=60,
        )


def _answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_cluster_store_matches_memory_store(cluster: redis.Redis, unique: str) -> None:
    layout = layout_from_config(CONFIG)
    cluster_store = RedisWindowStore(cluster, layout, KeySchema(f"c{unique}"))
    memory_store = MemoryWindowStore(layout)
    now_ms = int(time.time() * 1000)
    rows = [
        {
            "model": model,
            "version": f"v{i % 4}",
            "deployment": "stable",
            "age_ms": i * 37,
            "latency_ms": 1.5 * i,
            "confidence": (i % 10) / 10,
            "error": i % 7 == 0,
            "region": ["eu", "us", None][i % 3],
            "partition": i % 3,
        }
        for model in ("fraud", "churn", "ranker", "search")
        for i in range(300)
    ]
    for store in (cluster_store, memory_store):
        assert _write(store, CONFIG, rows, now_ms, list(range(len(rows)))) == len(rows)
        assert _write(store, CONFIG, rows, now_ms, list(range(len(rows)))) == 0
    slots = {cluster.keyslot(f"c{unique}:{{{model}}}:totals") for model in ("fraud", "churn")}
    assert len(slots) == 2, "models live on different slots"
    for model in ("fraud", "churn", "ranker", "search"):
        assert cluster_store.read_windows(
            model, [60_000, 600_000], now_ms
        ) == memory_store.read_windows(model, [60_000, 600_000], now_ms)
        assert cluster_store.totals(model) == memory_store.totals(model)


def test_consumer_counts_exactly_once_on_cluster(
    cluster: redis.Redis, stack_config: Callable[..., Config], kafka_bootstrap: str
) -> None:
    config = stack_config(partitions=3, redis={"url": f"redis+cluster://127.0.0.1:{PORT}/0"})
    now_ms = int(time.time() * 1000)
    values = []
    for seed, model in enumerate(("fraud", "churn", "ranker")):
        values += [
            raw
            for raw, _ in synthetic_events(
                TrafficSpec(model, "v1", feature_count=2),
                3000,
                start_ms=now_ms - 30_000,
                rate_per_s=100,
                seed=seed,
            )
        ]
    produce(kafka_bootstrap, config.topics.events, values)
    store = RedisWindowStore(
        cluster, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    EventConsumer(config, store).run(max_idle_s=3)
    EventConsumer(config, store).run(max_idle_s=2)  # a second pass replays nothing
    for model in ("fraud", "churn", "ranker"):
        assert store.totals(model) == {"v1|stable||events": 3000}


def test_labels_join_predictions_recorded_on_every_node(
    cluster: redis.Redis,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    unique: str,
) -> None:
    model, positive = "fraud", "fraud"
    config = stack_config(
        partitions=2,
        redis={"url": f"redis+cluster://127.0.0.1:{PORT}/0"},
        models={model: {"segments": ["region"], "labels": {"positive_classes": [positive]}}},
    )
    now_ms = int(time.time() * 1000)
    predictions = [
        Prediction(
            event_id=f"{unique}-{i}",
            ts_ms=now_ms - 60_000 + i,
            version="v1",
            deployment="stable",
            confidence=0.9,
            prediction=positive if i % 3 == 0 else "legit",
            truth=positive if i % 4 == 0 else "legit",
            region=("eu", "us")[i % 2],
        )
        for i in range(600)
    ]
    produce(kafka_bootstrap, config.topics.events, [p.event(model) for p in predictions])
    store = RedisWindowStore(
        cluster, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    consume_events(config, store, model, len(predictions))
    # The records lie on every node, so no single MGET could read a batch of them back.
    records = [store.keys.prediction(p.event_id) for p in predictions]
    assert len({cluster.get_node_from_key(key).name for key in records}) == 3

    labels = [label_message(p.event_id, p.truth, now_ms) for p in predictions]
    produce(kafka_bootstrap, config.topics.labels, labels)
    consume_labels(config, store, [model], len(labels))
    expected = Expected()
    for prediction in predictions:
        expected.add(prediction, positive)
    [window] = store.read_windows(model, [config.windows.long_seconds * 1000], now_ms)
    confusion = [
        "labelled",
        "correct",
        f"true_positive@{positive}",
        f"false_positive@{positive}",
        f"false_negative@{positive}",
    ]
    assert as_plain(series_counters(window, confusion)) == as_plain(expected.counts)
