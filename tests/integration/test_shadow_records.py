"""Shadow answers on record: Redis and the in-memory store keep the same legs and the same index.

A service sends the stable and the shadow answer to one input with the same event_id; both must
stay on record (the shadow one must not overwrite the stable one, whichever comes first), and the
shadow ids are indexed by event time, pruned past the long window and capped, identically in both
stores (``backtest`` must see what the live gate sees).
"""

from __future__ import annotations

import time
import uuid

import msgspec
import redis

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from detectors.prediction_record import decode_record
from detectors.stores.memory_store import MemoryWindowStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema, WindowStore
from detectors.window_update import build_window_update
from driftline.cli import layout_from_config
from driftline.config import parse_config

_encoder = msgspec.json.Encoder()


def _event(event_id: str, ts_ms: int, version: str, deployment: str, prediction: str) -> bytes:
    return _encoder.encode(
        {
            "event_id": event_id,
            "ts": ts_ms,
            "model": "fraud",
            "version": version,
            "deployment": deployment,
            "prediction": prediction,
        }
    )


def test_both_legs_stay_on_record_and_the_index_is_the_same_in_both_stores(
    redis_url: str, redis_client: redis.Redis
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    config = parse_config(
        {
            "redis": {"url": redis_url, "key_prefix": prefix},
            "windows": {"short_seconds": 60, "long_seconds": 600},
            "models": {"fraud": {}},  # no labels: the agreement check alone keeps records
            "rollout": {
                "models": {"fraud": {"checks": [{"figure": "agreement", "min_value": 0.9}]}}
            },
        }
    )
    layout = layout_from_config(config)
    now_ms = int(time.time() * 1000)
    clock = [now_ms]
    redis_store = RedisWindowStore(redis_client, layout, KeySchema(prefix))
    memory_store = MemoryWindowStore(layout, clock=lambda: clock[0])
    later_ms = now_ms + 100_000
    # Batch 1 (at now): a pair "a" 650 s old, the shadow leg of "b" before its stable leg, "c" in
    # stable only. Batch 2 (100 s later): "b"'s stable leg, a pair "d"; "a" is now more than the
    # long window plus a rollup older than the newest shadow event, and leaves the index.
    batches = [
        (
            now_ms,
            [
                _event("a", now_ms - 650_000, "v1", "stable", "ok"),
                _event("a", now_ms - 650_000, "v2", "shadow", "fraud"),
                _event("b", now_ms - 5000, "v2", "shadow", "fraud"),
                _event("c", now_ms - 4000, "v1", "stable", "ok"),
            ],
        ),
        (
            later_ms,
            [
                _event("b", now_ms - 5000, "v1", "stable", "fraud"),
                _event("d", later_ms - 3000, "v1", "stable", "ok"),
                _event("d", later_ms - 3000, "v2", "shadow", "ok"),
            ],
        ),
    ]
    offset = 0
    for at_ms, values in batches:
        clock[0] = at_ms
        for store in (redis_store, memory_store):
            assembler = BatchAssembler(config, store)
            positions = list(range(offset, offset + len(values)))
            batch = assembler.assemble([0] * len(values), positions, values, at_ms)
            update = build_window_update(
                batch.models["fraud"], layout, binning_from_config(config), at_ms
            )
            store.apply(update)
            if at_ms == now_ms:
                assert store.shadow_event_ids("fraud", 0, at_ms, 10) == ["b", "a"]
        offset += len(values)

    def legs(store: WindowStore, event_id: str) -> tuple[object, object]:
        [stable], [shadow] = (
            store.prediction_records([event_id]),
            store.shadow_prediction_records([event_id]),
        )
        return (
            None if stable is None else _leg(stable),
            None if shadow is None else _leg(shadow),
        )

    for store in (redis_store, memory_store):
        # Whichever leg came first, neither overwrote the other.
        assert legs(store, "b") == (("v1", "stable", "fraud"), ("v2", "shadow", "fraud"))
        assert legs(store, "c") == (("v1", "stable", "ok"), None)
        assert legs(store, "d") == (("v1", "stable", "ok"), ("v2", "shadow", "ok"))
        assert store.shadow_event_ids("fraud", 0, later_ms, 10) == ["d", "b"]
        assert store.shadow_event_ids("fraud", 0, later_ms, 1) == ["d"]
        assert store.shadow_event_ids("fraud", now_ms - 4999, later_ms, 10) == ["d"]
        assert store.shadow_event_ids("fraud", 0, later_ms - 3000, 10) == ["b"]  # to is exclusive


def _leg(raw: str | bytes) -> tuple[str, str, object]:
    record = decode_record(raw)
    assert record is not None
    return record.version, record.deployment, record.prediction
