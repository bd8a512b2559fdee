"""Soak: a steady stream for a long time, watching for leaks and drift in resource use.

Runs one ``driftline consume`` and one ``driftline evaluate`` process for ``--minutes``
(default 10) while producing ``--rate`` events/s (default 20,000) spread over ``--models`` models
(default 50), with windows shortened (short 60 s, long 300 s) so they are full after about
six minutes. Samples every 5 s: consumer RSS, consumer lag, Redis used memory. Prints one JSON
object with:

- ``rss_growth_ratio``: consumer RSS at the end against RSS after warm-up (target < 0.05);
- ``lag_max_messages`` and ``lag_p99_messages`` after warm-up (bounded = the consumer keeps up);
- ``redis_memory_growth_ratio`` over the part of the run where the windows were full (flat).

    python bench/soak.py [--minutes 10] [--rate 20000] [--models 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from consumers.kafka_queries import create_topics  # noqa: E402
from driftline.config import parse_config  # noqa: E402
from driftline.synthetic import TrafficSpec, synthetic_events  # noqa: E402

WARMUP_S = 60.0
LONG_WINDOW_S = 300


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _lag(reader: Consumer, topic: str, partitions: int) -> int:
    committed = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    total = 0
    for tp in committed:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        total += high - (tp.offset if tp.offset >= 0 else low)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    arguments = parser.parse_args()
    bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    redis_url = os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")
    run = uuid.uuid4().hex[:8]
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"soak-{run}"},
            "redis": {"url": redis_url, "key_prefix": f"soak{run}"},
            "topics": {"events": f"soak.{run}.events", "dead_letter": f"soak.{run}.dead-letter"},
            "windows": {
                "bucket_seconds": 5,
                "rollup_seconds": 30,
                "short_seconds": 60,
                "long_seconds": LONG_WINDOW_S,
            },
            "consumer": {"batch_size": 5000},
            "evaluator": {"metrics_port": 0, "tick_seconds": 5},
        }
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topics(
        admin, [NewTopic(config.topics.events, 8, 1), NewTopic(config.topics.dead_letter, 1, 1)]
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    models = [f"model{i:02d}" for i in range(arguments.models)]
    templates = []
    for seed, model in enumerate(models):
        for _raw, event in synthetic_events(
            TrafficSpec(model, "v1", feature_count=10), 20, start_ms=0, rate_per_s=1, seed=seed
        ):
            event.pop("ts")
            templates.append(
                (json.dumps(event, separators=(",", ":")).encode()[1:], model.encode())
            )

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "soak.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        command = [sys.executable, "-m", "driftline.cli", "--log-level", "warning"]
        consumer = subprocess.Popen([*command, "consume", "--config", str(path)], cwd=REPO)
        evaluator = subprocess.Popen([*command, "evaluate", "--config", str(path)], cwd=REPO)
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": config.kafka.group_id})
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
        )
        samples: list[tuple[float, float, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(5):
                samples.append(
                    (
                        time.monotonic() - started,
                        _rss_mb(consumer.pid),
                        _lag(reader, config.topics.events, 8),
                        int(client.info("memory")["used_memory"]),
                    )
                )

        started = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        duration = arguments.minutes * 60
        try:
            while (elapsed := time.monotonic() - started) < duration:
                due = int(elapsed * arguments.rate)
                now_ms = str(int(time.time() * 1000)).encode()
                while sent < due:
                    body, key = templates[sent % len(templates)]
                    try:
                        producer.produce(
                            config.topics.events, value=b'{"ts":' + now_ms + b"," + body, key=key
                        )
                        sent += 1
                    except BufferError:
                        producer.poll(0.01)
                producer.poll(0)
                time.sleep(0.002)
        finally:
            stop.set()
            sampler.join()
            producer.flush(30)
            for process in (consumer, evaluator):
                process.terminate()
                process.wait(60)
            reader.close()

    admin.delete_topics([config.topics.events, config.topics.dead_letter])
    for key in client.scan_iter(f"soak{run}:*", count=1000):
        client.delete(key)
    times = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    lag = np.array([s[2] for s in samples])
    memory = np.array([s[3] for s in samples])
    warm = times >= WARMUP_S
    full = times >= LONG_WINDOW_S + 60
    result = {
        "minutes": arguments.minutes,
        "target_rate_events_per_s": arguments.rate,
        "achieved_rate_events_per_s": round(sent / duration),
        "models": arguments.models,
        "rss_after_warmup_mb": round(float(rss[warm][0]), 1),
        "rss_end_mb": round(float(rss[-1]), 1),
        "rss_peak_mb": round(float(rss.max()), 1),
        "rss_growth_ratio": round(float(rss[-1] / rss[warm][0] - 1), 4),
        "lag_max_messages": int(lag[warm].max()),
        "lag_p99_messages": int(np.percentile(lag[warm], 99)),
        "redis_memory_when_full_mb": round(float(memory[full][0]) / 2**20, 1)
        if full.any()
        else None,
        "redis_memory_end_mb": round(float(memory[-1]) / 2**20, 1),
        "redis_memory_growth_ratio": round(float(memory[-1] / memory[full][0] - 1), 4)
        if full.any()
        else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
