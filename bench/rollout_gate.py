"""How long the rollout gate takes to answer, and what shadow records cost in Redis; prints JSON.

Writes an hour of one model's traffic into the local Redis through the events path
(``BatchAssembler`` + ``WindowWriter``, under a fresh key prefix, deleted afterwards): 100,000
stable events with 20 features and a drift reference, 10,000 canary events, and 20,000 shadow
answers to stable's inputs (same event ids). Then times, per verdict (median and p95 of 50):
the canary in process, the shadow in process (agreement joins 20,000 pairs), and the canary over
HTTP (``GET /v1/verdict``); and measures Redis memory per shadow record (record + index entry).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
import uuid

import msgspec
import numpy as np
import redis

from alerting.rollout_gate_server import serve_gate
from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.window_writer import WindowWriter
from detectors.reference_builder import ReferenceBuilder
from detectors.reference_cache import ReferenceCache
from detectors.stores.redis_reference_store import RedisReferenceStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import parse_config
from driftline.events import InferenceEvent, decode_event
from driftline.rollout_commands import build_gate
from driftline.synthetic import TrafficSpec, synthetic_events

STABLE, CANARY, SHADOW, REPEATS = 100_000, 10_000, 20_000, 50


def _timed(call: object, repeats: int = REPEATS) -> dict[str, float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": round(float(np.median(seconds)) * 1000, 2),
        "p95_ms": round(float(np.quantile(seconds, 0.95)) * 1000, 2),
    }


def main() -> None:
    url = os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    agreement = {"figure": "agreement", "min_value": 0.95}
    config = parse_config(
        {
            "redis": {"url": url, "key_prefix": prefix},
            "models": {"fraud": {}},
            "rollout": {
                "models": {
                    "fraud": {
                        "minimum_events": 1000,
                        "checks": [
                            {"figure": "error_ratio", "max_rise": 0.01},
                            {"figure": "latency_p99", "max_ratio": 1.2},
                            {"figure": "drift_share", "max_rise": 0.2},
                            agreement,
                        ],
                    }
                }
            },
        }
    )
    client = redis.Redis.from_url(url, decode_responses=True)
    store = RedisWindowStore(client, layout_from_config(config), KeySchema(prefix))
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - 3_590_000

    def traffic(version: str, deployment: str, count: int, seed: int) -> list[bytes]:
        spec = TrafficSpec("fraud", version, deployment=deployment, feature_count=20)
        rate = count / 3_580
        return [
            raw
            for raw, _ in synthetic_events(
                spec, count, start_ms=start_ms, rate_per_s=rate, seed=seed
            )
        ]

    stable = traffic("v1", "stable", STABLE, 1)
    builder = ReferenceBuilder("fraud", confidence_bins=config.monitoring.confidence_bins)
    reference_sample = traffic("v0", "stable", 20_000, 9)
    builder.add(e for e in map(decode_event, reference_sample) if isinstance(e, InferenceEvent))
    RedisReferenceStore(client, KeySchema(prefix)).save(builder.build(created_at_ms=now_ms))
    canary = traffic("v2", "canary", CANARY, 2)
    shadow = []
    for raw, twin in zip(traffic("v3", "shadow", SHADOW, 3), stable[::5], strict=False):
        event = msgspec.json.decode(raw)
        event.update(
            event_id=msgspec.json.decode(twin)["event_id"], ts=msgspec.json.decode(twin)["ts"]
        )
        shadow.append(msgspec.json.encode(event))
    shadow_ids = [str(msgspec.json.decode(raw)["event_id"]) for raw in shadow[:1]]
    cache = ReferenceCache(RedisReferenceStore(client, KeySchema(prefix)))
    assembler = BatchAssembler(config, store, cache.binner_for)
    writer = WindowWriter(
        store, binning_from_config(config), cache.binner_for, config.drift.sequential_policy()
    )
    offset = 0
    index_key = KeySchema(prefix).shadow_events("fraud")
    memory: dict[str, int] = {}
    for name, values in (("stable", stable), ("canary", canary), ("shadow", shadow)):
        before = int(client.info("memory")["used_memory"])
        for first in range(0, len(values), 5000):
            chunk = values[first : first + 5000]
            batch = assembler.assemble(
                [0] * len(chunk), list(range(offset, offset + len(chunk))), chunk, now_ms
            )
            offset += len(chunk)
            writer.write_all(list(batch.models.values()), now_ms)
        memory[name] = int(client.info("memory")["used_memory"]) - before

    gate = build_gate(config, store)
    canary_verdict = gate.verdict("fraud", "v2")
    shadow_verdict = gate.verdict("fraud", "v3")
    server = serve_gate(
        gate, "127.0.0.1", 0, token=b"bench", hmac_secret=None, max_body_bytes=65536
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}/v1/verdict?model=fraud&candidate=v2"

    def over_http() -> None:
        request = urllib.request.Request(address, headers={"Authorization": "Bearer bench"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    [pairs] = [r.numbers["pairs"] for r in shadow_verdict.reasons if r.check == "agreement"]
    result = {
        "benchmark": "rollout_gate",
        "events": {"stable": STABLE, "canary": CANARY, "shadow": SHADOW, "features": 20},
        "verdicts": {"canary": canary_verdict.verdict, "shadow": shadow_verdict.verdict},
        "shadow_pairs_joined": pairs,
        "verdict_in_process": _timed(lambda: gate.verdict("fraud", "v2")),
        "verdict_shadow_in_process": _timed(lambda: gate.verdict("fraud", "v3")),
        "verdict_over_http": _timed(over_http),
        "shadow_index_entries": int(client.zcard(index_key)),
        "redis_bytes_per_shadow_record": int(
            client.memory_usage(KeySchema(prefix).shadow_prediction(shadow_ids[0])) or 0
        ),
        "redis_bytes_per_shadow_index_entry": round(
            int(client.memory_usage(index_key) or 0) / max(1, int(client.zcard(index_key))), 1
        ),
        "redis_bytes_per_shadow_event_with_windows": round(memory["shadow"] / SHADOW, 1),
        "redis_bytes_per_stable_event_with_windows": round(memory["stable"] / STABLE, 1),
    }
    server.shutdown()
    for key in client.scan_iter(f"{prefix}:*", count=10_000):
        client.delete(key)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
