"""Scale-out on a consumer group: throughput with 1, 2, 3 and 4 ``consume`` processes.

Prefills a 12-partition topic once, then for each process count starts that many
``driftline consume`` processes in a fresh group (and a fresh Redis key prefix) and measures
events/s from the first applied event to the last. Prints one JSON object. On this 2-core machine
throughput should rise until the cores are saturated (Redis and the consumers share them), then
flatten; more processes must never lose or double-count (the totals are checked).

    python bench/scale_out.py [--events 400000] [--max-processes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.throughput import MODELS, prefill  # noqa: E402
from consumers.kafka_queries import create_topics  # noqa: E402
from driftline.config import parse_config  # noqa: E402


def run(
    processes: int, topic: str, count: int, bootstrap: str, client: redis.Redis, directory: Path
) -> float:
    run_id = uuid.uuid4().hex[:8]
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"scale-{run_id}"},
            "redis": {
                "url": client.connection_pool.connection_kwargs.get("path")
                or f"redis://{client.connection_pool.connection_kwargs['host']}:"
                f"{client.connection_pool.connection_kwargs['port']}/0",
                "key_prefix": f"scale{run_id}",
            },
            "topics": {"events": topic, "dead_letter": f"{topic}.dead-letter"},
            "consumer": {"batch_size": 10_000},
        }
    )
    path = directory / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftline.cli",
                "--log-level",
                "warning",
                "consume",
                "--config",
                str(path),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    started = None
    first = 0
    try:
        while True:
            pipeline = client.pipeline(transaction=False)
            for model in MODELS:
                pipeline.hget(f"scale{run_id}:{{{model}}}:totals", "v1|stable||events")
            applied = sum(int(v or 0) for v in pipeline.execute())
            if applied and started is None:
                started, first = time.perf_counter(), applied
            if applied >= count:
                if applied != count:
                    raise AssertionError(f"{applied} applied for {count} produced")
                break
            time.sleep(0.02)
        assert started is not None
        return (count - first) / (time.perf_counter() - started)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(60)
        for key in client.scan_iter(f"scale{run_id}:*", count=1000):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--max-processes", type=int, default=4)
    arguments = parser.parse_args()
    bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    client = redis.Redis.from_url(
        os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0"), decode_responses=True
    )
    topic = f"scale.{uuid.uuid4().hex[:8]}.events"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topics(admin, [NewTopic(topic, 12, 1), NewTopic(f"{topic}.dead-letter", 1, 1)])
    count, _ = prefill(bootstrap, topic, arguments.events, spread_keys=True)
    rates = {}
    with tempfile.TemporaryDirectory() as directory:
        for processes in range(1, arguments.max_processes + 1):
            rates[processes] = run(processes, topic, count, bootstrap, client, Path(directory))
    admin.delete_topics([topic, f"{topic}.dead-letter"])
    print(
        json.dumps(
            {
                "events": count,
                "partitions": 12,
                "cores": os.cpu_count(),
                "events_per_s": {str(k): round(v) for k, v in rates.items()},
                "speedup_vs_one": {str(k): round(v / rates[1], 2) for k, v in rates.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
