"""Cardinality attacks are capped and counted; Redis ACL credentials come from the config."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import pytest
import redis
from redis.cluster import RedisCluster

from alerting.evaluator import Evaluator
from alerting.snapshot import SnapshotCollector
from consumers.kafka_consumer import EventConsumer
from detectors.series import OVERFLOW_VALUE
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config, open_store
from driftline.config import Config
from tests.conftest import produce


def test_thousands_of_models_versions_segments_and_features_are_capped(
    stack_config: Callable[..., Config], kafka_bootstrap: str, redis_client: redis.Redis
) -> None:
    config = stack_config(
        partitions=2,
        models={"fraud": {"segments": ["region"]}},
        monitoring={"max_models": 3, "max_versions_per_model": 4, "max_segment_values": 5},
        evaluator={"max_series": 10_000},
    )
    now_ms = int(time.time() * 1000)
    values = [
        msgspec.json.encode(
            {
                "event_id": f"e{i}",
                "ts": now_ms,
                "model": "fraud" if i % 2 else f"m{i}",
                "version": f"v{i}",
                "latency_ms": 1.0,
                "segment": {"region": f"r{i}"},
                "features": {f"feature_{i}_{j}": j for j in range(20)},
            }
        )
        for i in range(4000)
    ]
    produce(kafka_bootstrap, config.topics.events, values)
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    EventConsumer(config, store).run(max_idle_s=3)

    models = store.models()
    assert len(models) == 3 and "fraud" in models  # configured models always admitted
    prefix = config.redis.key_prefix
    assert redis_client.scard(f"{prefix}:{{fraud}}:admitted:versions") == 4
    assert redis_client.scard(f"{prefix}:{{fraud}}:admitted:segment:region") == 5
    totals = store.totals("fraud")
    overflow = totals[f"{OVERFLOW_VALUE}|stable||events"]
    assert overflow == 2000 - 4
    assert sum(count for name, count in totals.items() if name.endswith("||events")) == 2000

    keys = list(redis_client.scan_iter(f"{prefix}:*", count=1000))
    # 3 models x (bucket + rollup + checkpoints + totals + meta + admitted sets) + registry, etc.
    assert len(keys) < 60, keys
    fields = sum(redis_client.hlen(key) for key in keys if redis_client.type(key) == "hash")
    assert fields < 3000, "unknown feature names and capped values add no fields"

    snapshot = Evaluator(config, store, SnapshotCollector()).tick()
    assert len(snapshot.samples) < 600
    refused = [s for s in snapshot.samples if s.metric.name == "driftline_bad_events_total"]
    assert {s.labels: s.value for s in refused} == {("unknown_model",): 2000 - 2}


def test_redis_acl_user_from_config(
    stack_config: Callable[..., Config], redis_client: redis.Redis, unique: str
) -> None:
    user = f"driftline-{unique}"
    prefix = f"acl{unique}"
    _on_every_node(
        redis_client,
        "ACL",
        "SETUSER",
        user,
        "reset",
        "on",
        f">s3cret-{unique}",
        f"~{prefix}:*",
        "+@all",
    )
    try:
        config = stack_config(
            redis={"key_prefix": prefix, "username": user, "password": f"s3cret-{unique}"}
        )
        store = open_store(config)
        assert store.admit_models(["fraud"], 5) == [True]
        assert store.models() == ["fraud"]
        with pytest.raises(redis.ResponseError, match="no permissions"):
            store.client.set("outside-the-prefix", 1)

        wrong = config.model_copy(
            update={"redis": config.redis.model_copy(update={"password": "nope"})}
        )
        with pytest.raises(Exception, match="cannot connect"):
            open_store(wrong)
    finally:
        _on_every_node(redis_client, "ACL", "DELUSER", user)
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)


def _on_every_node(client: redis.Redis, *command: str) -> None:
    """Run an ``ACL`` command everywhere: each Redis Cluster node keeps its own users."""
    if isinstance(client, RedisCluster):
        client.execute_command(*command, target_nodes=RedisCluster.ALL_NODES)
    else:
        client.execute_command(*command)
