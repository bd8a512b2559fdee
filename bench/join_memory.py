"""Redis memory per prediction on record (label join) and per duplicate marker; prints JSON.

Writes 50,000 records through the events path (``build_window_update`` + ``RedisWindowStore``),
as a model with ``labels.join`` produces them, and 50,000 markers through the labels path, under
a fresh key prefix, and measures ``used_memory`` before and after (then deletes them).
"""

from __future__ import annotations

import json
import os
import time
import uuid

import redis

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.label_batching import LabelAssembler
from consumers.label_writer import LabelWriter
from consumers.window_writer import WindowWriter
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import parse_config
from driftline.synthetic import TrafficSpec, synthetic_events

COUNT = 50_000


def _bucket_bytes(client: redis.Redis, prefix: str) -> int:
    pattern = f"{prefix}:{{fraud}}:bucket:*"
    return sum(int(client.memory_usage(key) or 0) for key in client.scan_iter(pattern))


def main() -> None:
    url = os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = parse_config(
        {
            "redis": {"url": url, "key_prefix": prefix},
            "models": {
                "fraud": {"segments": ["region"], "labels": {"positive_classes": ["positive"]}}
            },
        }
    )
    client = redis.Redis.from_url(url, decode_responses=True)
    store = RedisWindowStore(client, layout_from_config(config), KeySchema(prefix))
    now_ms = int(time.time() * 1000)
    spec = TrafficSpec("fraud", "v1", feature_count=0, segments=[("region", ["eu", "us"])])
    values = [
        raw
        for raw, _ in synthetic_events(
            spec, COUNT, start_ms=now_ms - 60_000, rate_per_s=COUNT / 50, seed=1
        )
    ]
    assembler = BatchAssembler(config, store)
    writer = WindowWriter(store, binning_from_config(config))
    before = int(client.info("memory")["used_memory"])
    batch = assembler.assemble([0] * COUNT, list(range(COUNT)), values, now_ms)
    # Window buckets are written too: their own memory is left out of the per-key figures.
    writer.write_all(list(batch.models.values()), now_ms)
    after_records = int(client.info("memory")["used_memory"])
    buckets = _bucket_bytes(client, prefix)
    sample_key = next(client.scan_iter(f"{prefix}:prediction:*"))
    labels = [
        json.dumps({"event_id": f"fraud-v1-{i}", "label": "positive"}).encode()
        for i in range(COUNT)
    ]
    label_batch = LabelAssembler(config, store).assemble(
        [0] * COUNT, list(range(COUNT)), [now_ms] * COUNT, labels, now_ms
    )
    LabelWriter(config, store).write_all(label_batch.models.values(), now_ms)
    after_markers = int(client.info("memory")["used_memory"])
    label_buckets = _bucket_bytes(client, prefix) - buckets
    marker_key = next(client.scan_iter(f"{prefix}:{{fraud}}:labelled:*"))
    result = {
        "predictions_on_record": COUNT,
        "bytes_per_record": round((after_records - before - buckets) / COUNT, 1),
        "memory_usage_of_one_record_key": client.memory_usage(sample_key),
        "record_value_bytes": len(client.get(sample_key) or ""),
        "bytes_per_marker": round((after_markers - after_records - label_buckets) / COUNT, 1),
        "memory_usage_of_one_marker_key": client.memory_usage(marker_key),
    }
    for pattern in (f"{prefix}:*",):
        keys = list(client.scan_iter(pattern, count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
