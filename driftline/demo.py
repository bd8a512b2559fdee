"""``driftline demo``: synthetic traffic through the real local stack, with live window figures.

It creates the topics, starts one ``driftline consume`` and one ``driftline evaluate`` process
(the same commands a deployment runs), publishes seeded traffic for two models with a stable and
a canary version through :class:`~driftline.publisher.Publisher`, and redraws a table of the
evaluator's figures every two seconds. Halfway through, the canary of ``fraud`` gets slower.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.live import Live
from rich.table import Table

from alerting.evaluator import Evaluator
from alerting.snapshot import Snapshot, SnapshotCollector
from driftline.config import Config
from driftline.publisher import Publisher
from driftline.synthetic import TrafficSpec, synthetic_events

__all__ = ["run_demo"]

STREAMS = (
    TrafficSpec("fraud", "v41", "stable", feature_count=5),
    TrafficSpec("fraud", "v42", "canary", feature_count=5),
    TrafficSpec("churn", "v7", "stable", feature_count=5, latency_median_ms=45.0),
    TrafficSpec("churn", "v8", "canary", feature_count=5, latency_median_ms=45.0),
)


def _ensure_topics(config: Config) -> None:
    admin = AdminClient(
        {"bootstrap.servers": config.kafka.bootstrap_servers, **config.kafka.client}
    )
    existing = admin.list_topics(timeout=30).topics
    wanted = [
        NewTopic(name, partitions, 1)
        for name, partitions in (
            (config.topics.events, 4),
            (config.topics.dead_letter, 1),
            (config.topics.labels, 4),
            (config.topics.control, 1),
        )
        if name not in existing
    ]
    for future in admin.create_topics(wanted).values() if wanted else []:
        future.result(timeout=30)


def _table(snapshot: Snapshot, elapsed_s: float) -> Table:
    table = Table(title=f"driftline demo: short window, {elapsed_s:5.1f}s")
    for column in (
        "model",
        "version",
        "deployment",
        "events",
        "p50 ms",
        "p99 ms",
        "error ratio",
        "confidence",
        "low conf.",
    ):
        table.add_column(column, justify="right" if column[0] in "epcl" else "left")
    figures: dict[tuple[str, ...], dict[str, float]] = {}
    for sample in snapshot.samples:
        labels = dict(zip(sample.metric.labels, sample.labels, strict=True))
        if labels.get("window") != "short" or labels.get("segment"):
            continue
        key = (labels["model"], labels["version"], labels["deployment"])
        name = sample.metric.name
        if name == "driftline_latency_seconds":
            name = f"latency_{labels['quantile']}"
        figures.setdefault(key, {})[name] = sample.value
    for (model, version, deployment), values in sorted(figures.items()):
        table.add_row(
            model,
            version,
            deployment,
            f"{values.get('driftline_window_events', 0):.0f}",
            f"{values.get('latency_0.5', float('nan')) * 1000:.1f}",
            f"{values.get('latency_0.99', float('nan')) * 1000:.1f}",
            f"{values.get('driftline_error_ratio', float('nan')):.3f}",
            f"{values.get('driftline_confidence_mean_ratio', float('nan')):.3f}",
            f"{values.get('driftline_low_confidence_ratio', float('nan')):.3f}",
        )
    return table


def run_demo(config: Config, *, seconds: float, rate_per_s: float) -> None:
    from driftline.cli import open_store

    console = Console()
    _ensure_topics(config)
    store = open_store(config)
    with tempfile.TemporaryDirectory(prefix="driftline-demo-") as directory:
        config_path = Path(directory) / "driftline.yaml"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        command = [sys.executable, "-m", "driftline.cli", "--log-level", "warning"]
        processes = [
            subprocess.Popen([*command, "consume", "--config", str(config_path)]),
            subprocess.Popen([*command, "evaluate", "--config", str(config_path)]),
        ]
        try:
            _publish_and_watch(config, store, console, seconds, rate_per_s)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    console.print(
        f"Metrics: http://{config.evaluator.metrics_host}:{config.evaluator.metrics_port}/metrics"
        "  (Prometheus scrapes them as job 'driftline')"
    )


def _publish_and_watch(
    config: Config, store: object, console: Console, seconds: float, rate_per_s: float
) -> None:
    publisher = Publisher(
        config.kafka.bootstrap_servers, config.topics.events, settings=dict(config.kafka.client)
    )
    collector = SnapshotCollector()
    evaluator = Evaluator(config, store, collector)  # type: ignore[arg-type]
    started = time.monotonic()
    start_ms = int(time.time() * 1000)
    total = int(seconds * rate_per_s)
    streams = [
        synthetic_events(
            spec,
            total,
            start_ms=start_ms,
            rate_per_s=rate_per_s,
            seed=seed,
            id_prefix=f"demo{start_ms}-",
        )
        for seed, spec in enumerate(STREAMS)
    ]
    slow_streams = synthetic_events(
        TrafficSpec("fraud", "v42", "canary", feature_count=5, latency_median_ms=60.0),
        total,
        start_ms=start_ms,
        rate_per_s=rate_per_s,
        seed=99,
        id_prefix=f"demo{start_ms}s-",
    )
    sent = 0
    last_draw = 0.0
    with Live(console=console, refresh_per_second=2) as live:
        while (elapsed := time.monotonic() - started) < seconds:
            due = min(total, int(elapsed * rate_per_s))
            degraded = elapsed > seconds / 2
            while sent < due:
                for index, stream in enumerate(streams):
                    raw, event = next(stream)
                    if index == 1 and degraded:
                        raw, event = next(slow_streams)
                    publisher.publish_raw(raw, key=str(event["model"]).encode())
                sent += 1
            if elapsed - last_draw >= 2:
                live.update(_table(evaluator.tick(), elapsed))
                last_draw = elapsed
            time.sleep(0.01)
        publisher.flush()
        time.sleep(config.consumer.poll_timeout_seconds * 2 + 1)
        live.update(_table(evaluator.tick(), time.monotonic() - started))
    console.print(f"Published {publisher.delivered} events ({publisher.failed} failed).")
