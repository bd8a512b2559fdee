"""Throughput of the streaming core against the raw consume-and-decode floor, in one run.

Prefills a topic with N events (20 numeric features, latency, confidence; about 700 bytes each),
then measures, on the same data:

- ``floor_events_per_s``: a bare confluent-kafka consumer that only consumes and decodes;
- ``pipeline_events_per_s``: one ``driftline consume`` process, the full path into Redis;
- ``ratio``: pipeline / floor (absolute rates on a shared machine are noisy; the ratio is not);
- ``redis_commands_per_batch`` and ``redis_round_trips_per_batch``, from Redis' own statistics;
- ``peak_rss_mb`` of the consumer process;
- ``freshness_p99_s``: at a steady produce rate (default 50,000 events/s), how old the newest
  applied event is when sampled, i.e. how far the windows trail reality.

Prints one JSON object. Needs the local stack: ``eval "$(bash deploy/local/stack.sh env)"``.

    python bench/throughput.py [--events 1000000] [--steady-rate 50000] [--steady-seconds 20]
                               [--runtime confluent|faust] [--no-reference] [--no-sequential]

``--runtime faust`` measures the faust-streaming runtime on the same data; its batches are often
smaller than ``--batch-size`` (a Faust batch also ends when ``poll_timeout_seconds`` passes), so
its per-batch Redis figures are per configured batch.
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
from typing import Any

import numpy as np
import redis
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from consumers.kafka_queries import create_topics  # noqa: E402
from detectors.reference_builder import ReferenceBuilder  # noqa: E402
from detectors.stores.redis_reference_store import RedisReferenceStore  # noqa: E402
from detectors.window_store import KeySchema  # noqa: E402
from driftline.config import Config, parse_config  # noqa: E402
from driftline.events import InferenceEvent, decode_event  # noqa: E402
from driftline.synthetic import TrafficSpec, synthetic_events  # noqa: E402

MODELS = ("fraud", "churn", "ranker", "search")
EVENT_TIME_SPAN_S = 10.0


def _config(
    run: str, bootstrap: str, redis_url: str, runtime_batch: int, sequential: bool = True
) -> Config:
    return parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{run}"},
            "redis": {"url": redis_url, "key_prefix": f"bench{run}"},
            "topics": {
                "events": f"bench.{run}.events",
                "dead_letter": f"bench.{run}.dead-letter",
            },
            "consumer": {"batch_size": runtime_batch},
            "drift": {"sequential": {"enabled": sequential}},
        }
    )


def _create_topics(admin: AdminClient, config: Config, partitions: int) -> None:
    create_topics(
        admin,
        [NewTopic(config.topics.events, partitions, 1), NewTopic(config.topics.dead_letter, 1, 1)],
    )


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
        }
    )


def _send(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def prefill(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    spread_keys: bool = False,
    event_time_span_s: float = EVENT_TIME_SPAN_S,
) -> tuple[int, float]:
    """Produce ``count`` events of the benchmark models; returns (count, mean bytes).

    Their event times span the last ``event_time_span_s``: 10 s for a million events is the
    density of a live 100,000 events/s stream, where a batch touches one or two 10 s buckets.
    A longer span replays history (catch-up after an outage): each batch then touches more
    buckets, so more Redis fields, and the rate drops accordingly.

    Keys are the model name, as the contract says; ``spread_keys`` adds the event number, so
    that four models still spread over every partition of a wide topic (scale-out runs).
    """
    producer = _producer(bootstrap)
    now_ms = int(time.time() * 1000)
    per_model = count // len(MODELS)
    size = 0
    for seed, model in enumerate(MODELS):
        spec = TrafficSpec(model, "v1", feature_count=20)
        stream = synthetic_events(
            spec,
            per_model,
            start_ms=now_ms - round(event_time_span_s * 1000),
            rate_per_s=per_model / event_time_span_s,
            seed=seed,
            decimals=12,
        )
        for index, (raw, _) in enumerate(stream):
            size += len(raw)
            key = f"{model}-{index % 64}" if spread_keys else model
            _send(producer, topic, raw, key.encode())
        producer.poll(0)
    producer.flush(120)
    return per_model * len(MODELS), size / (per_model * len(MODELS))


def store_references(config: Config, client: redis.Redis) -> None:
    """A 20-feature reference per model, so the pipeline bins every feature (the full path)."""
    for seed, model in enumerate(MODELS):
        builder = ReferenceBuilder(model)
        sample = synthetic_events(
            TrafficSpec(model, "v1", feature_count=20),
            20_000,
            start_ms=0,
            rate_per_s=1000,
            seed=100 + seed,
        )
        builder.add(
            event for raw, _ in sample if isinstance(event := decode_event(raw), InferenceEvent)
        )
        reference = builder.build(created_at_ms=int(time.time() * 1000), source="bench")
        RedisReferenceStore(client, KeySchema(config.redis.key_prefix)).save(reference)


def measure_floor(bootstrap: str, topic: str, count: int, batch: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = None
    while seen < count:
        messages = consumer.consume(batch, timeout=1.0)
        if messages and started is None:
            started = time.perf_counter()
        for message in messages:
            if message.error() is None:
                decode_event(message.value())
                seen += 1
    assert started is not None
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def _applied(client: redis.Redis, config: Config) -> int:
    prefix = config.redis.key_prefix
    pipeline = client.pipeline(transaction=False)
    for model in MODELS:
        pipeline.hget(f"{prefix}:{{{model}}}:totals", "v1|stable||events")
    return sum(int(value or 0) for value in pipeline.execute())


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_consumer(
    config: Config, directory: Path, runtime: str = "confluent"
) -> subprocess.Popen[bytes]:
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "--log-level",
            "warning",
            "consume",
            "--config",
            str(path),
            "--runtime",
            runtime,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "consumer.log").open("wb"),
    )


def _command_stats(client: redis.Redis) -> tuple[int, int]:
    """(all commands, EVALSHA calls) executed by Redis so far."""
    stats: dict[str, Any] = client.info("commandstats")
    total = sum(int(entry["calls"]) for entry in stats.values())
    evalsha = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return total, evalsha


def measure_pipeline(
    config: Config, client: redis.Redis, count: int, directory: Path, runtime: str = "confluent"
) -> dict[str, float]:
    commands_before, scripts_before = _command_stats(client)
    process = _start_consumer(config, directory, runtime)
    started = None
    while True:
        applied = _applied(client, config)
        if applied and started is None:
            started, first = time.perf_counter(), applied
        if applied >= count:
            break
        if process.poll() is not None:
            raise RuntimeError(f"consumer exited: {(directory / 'consumer.log').read_text()}")
        time.sleep(0.02)
    assert started is not None
    elapsed = time.perf_counter() - started
    rss = _peak_rss_mb(process.pid)
    commands_after, scripts_after = _command_stats(client)
    batches = max(1, count / config.consumer.batch_size)
    return {
        "pipeline_events_per_s": (count - first) / elapsed,
        "peak_rss_mb": rss,
        "redis_commands_per_batch": (commands_after - commands_before) / batches,
        "redis_scripts_per_batch": (scripts_after - scripts_before) / batches,
        "process": process,  # type: ignore[dict-item]
    }


def measure_freshness(
    config: Config, client: redis.Redis, rate: float, seconds: float
) -> dict[str, float]:
    """Produce at ``rate`` with ts = now while the consumer runs; sample the newest event's age."""
    template = next(
        synthetic_events(TrafficSpec("fraud", "v1"), 1, start_ms=0, rate_per_s=1, seed=99)
    )[1]
    template.pop("ts")
    body = json.dumps(template, separators=(",", ":")).encode()[1:]
    producer = _producer(config.kafka.bootstrap_servers)
    stop = threading.Event()
    samples: list[float] = []

    def sample() -> None:
        key = f"{config.redis.key_prefix}:{{fraud}}:meta"
        while not stop.is_set():
            newest = client.hget(key, "newest_event_ms")
            if newest is not None:
                samples.append(time.time() - int(newest) / 1000)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sent = 0
    started = time.perf_counter()
    warmup_s = 3.0
    while (elapsed := time.perf_counter() - started) < seconds + warmup_s:
        due = int(elapsed * rate)
        now_ms = str(int(time.time() * 1000)).encode()
        while sent < due:
            _send(producer, config.topics.events, b'{"ts":' + now_ms + b"," + body, b"fraud")
            sent += 1
        producer.poll(0)
        if elapsed > warmup_s and not sampler.is_alive():
            sampler.start()
        time.sleep(0.001)
    stop.set()
    sampler.join()
    producer.flush(60)
    achieved = sent / (time.perf_counter() - started)
    return {
        "freshness_p50_s": float(np.percentile(samples, 50)),
        "freshness_p99_s": float(np.percentile(samples, 99)),
        "steady_rate_events_per_s": achieved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--steady-rate", type=float, default=50_000)
    parser.add_argument("--steady-seconds", type=float, default=20)
    parser.add_argument(
        "--event-time-span",
        type=float,
        default=EVENT_TIME_SPAN_S,
        metavar="SECONDS",
        help="event times of the prefilled events span this long (see prefill)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="measure without references (features then are not binned)",
    )
    parser.add_argument(
        "--no-sequential",
        action="store_true",
        help="turn the sequential test off (drift.sequential.enabled: false)",
    )
    parser.add_argument(
        "--runtime",
        choices=("confluent", "faust"),
        default="confluent",
        help="the `driftline consume --runtime` measured (docs/runtimes.md)",
    )
    arguments = parser.parse_args()

    bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    redis_url = os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")
    run = uuid.uuid4().hex[:8]
    config = _config(
        run, bootstrap, redis_url, arguments.batch_size, sequential=not arguments.no_sequential
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    _create_topics(admin, config, arguments.partitions)

    count, mean_bytes = prefill(
        bootstrap,
        config.topics.events,
        arguments.events,
        event_time_span_s=arguments.event_time_span,
    )
    if not arguments.no_reference:
        store_references(config, client)
    floor = measure_floor(bootstrap, config.topics.events, count, arguments.batch_size)
    with tempfile.TemporaryDirectory() as directory:
        pipeline = measure_pipeline(config, client, count, Path(directory), arguments.runtime)
        process = pipeline.pop("process")
        try:
            freshness = measure_freshness(
                config, client, arguments.steady_rate, arguments.steady_seconds
            )
        finally:
            process.terminate()  # type: ignore[attr-defined]
            process.wait(60)  # type: ignore[attr-defined]
    admin.delete_topics([config.topics.events, config.topics.dead_letter])
    for key in client.scan_iter(f"bench{run}:*", count=1000):
        client.delete(key)
    result = {
        "runtime": arguments.runtime,
        "reference_features": 0 if arguments.no_reference else 20,
        "sequential_test": not arguments.no_reference and not arguments.no_sequential,
        "event_time_span_s": arguments.event_time_span,
        "events": count,
        "event_bytes_mean": round(mean_bytes, 1),
        "batch_size": arguments.batch_size,
        "floor_events_per_s": round(floor),
        "pipeline_events_per_s": round(pipeline["pipeline_events_per_s"]),
        "ratio": round(pipeline["pipeline_events_per_s"] / floor, 3),
        "redis_commands_per_batch": round(pipeline["redis_commands_per_batch"], 1),
        "redis_scripts_per_batch": round(pipeline["redis_scripts_per_batch"], 2),
        "peak_rss_mb": round(pipeline["peak_rss_mb"], 1),
        **{name: round(value, 3) for name, value in freshness.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
