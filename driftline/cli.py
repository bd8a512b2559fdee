"""The ``driftline`` command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from driftline.config import Config, ConfigError, load_config

log = logging.getLogger("driftline")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def open_store(config: Config) -> Any:
    """The Redis window store described by ``config``, checked to answer."""
    import redis

    from detectors.stores.redis_store import RedisWindowStore, connect_redis
    from detectors.window_store import KeySchema

    settings = config.redis
    client = connect_redis(
        settings.url,
        username=settings.username,
        password=settings.password,
        ssl=settings.ssl,
        ssl_ca_certs=settings.ssl_ca_certs,
    )
    try:
        client.ping()
    except redis.RedisError as error:
        raise click.ClickException(f"redis.url = {settings.url!r}: cannot connect: {error}") from None
    return RedisWindowStore(client, layout_from_config(config), KeySchema(settings.key_prefix))


def layout_from_config(config: Config) -> Any:
    from detectors.window_update import WindowLayout

    windows = config.windows
    return WindowLayout(
        bucket_ms=windows.bucket_seconds * 1000,
        rollup_ms=windows.rollup_seconds * 1000,
        short_ms=windows.short_seconds * 1000,
        long_ms=windows.long_seconds * 1000,
        late_tolerance_ms=config.consumer.late_tolerance_seconds * 1000,
    )


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the current batch, then exiting", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML config file (defaults apply when omitted).",
)


@click.group()
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """driftline: a streaming monitor for machine-learning models in production."""
    _setup_logging(log_level)


@main.command()
@config_option
@click.option("--runtime", type=click.Choice(["confluent"]), default="confluent",
              show_default=True, help="Consumer runtime.")
@click.option("--exit-when-idle", type=float, default=None, metavar="SECONDS",
              help="Exit after this many seconds without a message (batch jobs, tests).")
def consume(config_path: Path | None, runtime: str, exit_when_idle: float | None) -> None:
    """Consume the events topic into the Redis windows (exactly once)."""
    from consumers.kafka_consumer import EventConsumer

    config = _config(config_path)
    consumer = EventConsumer(config, open_store(config))
    _stop_on_signals(consumer.stop)
    started = time.monotonic()
    consumer.run(max_idle_s=exit_when_idle)
    log.info("stopped after %d batches, %d events applied in %.1fs",
             consumer.batches, consumer.events_applied, time.monotonic() - started)


@main.command()
@config_option
@click.option("--port", type=int, default=None, help="Override evaluator.metrics_port.")
@click.option("--once", is_flag=True, help="Run one tick, print the figures as JSON, exit.")
def evaluate(config_path: Path | None, port: int | None, once: bool) -> None:
    """Compute window figures every tick and serve them on /metrics."""
    from prometheus_client import CollectorRegistry, start_http_server

    from alerting.consumer_lag import ConsumerLagReader
    from alerting.evaluator import Evaluator
    from alerting.snapshot import SnapshotCollector

    config = _config(config_path)
    store = open_store(config)
    collector = SnapshotCollector()
    lag_reader = ConsumerLagReader(
        config.kafka.bootstrap_servers, config.kafka.group_id, [config.topics.events],
        **config.kafka.client,
    )
    evaluator = Evaluator(config, store, collector, lag_reader=lag_reader)
    if once:
        snapshot = evaluator.tick()
        for sample in snapshot.samples:
            labels = dict(zip(sample.metric.labels, sample.labels, strict=True))
            click.echo(json.dumps({"metric": sample.metric.name, "labels": labels,
                                   "value": sample.value}))
        return
    registry = CollectorRegistry()
    registry.register(collector)
    listen_port = config.evaluator.metrics_port if port is None else port
    start_http_server(listen_port, addr=config.evaluator.metrics_host, registry=registry)
    log.info("serving /metrics on %s:%d", config.evaluator.metrics_host, listen_port)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    evaluator.run(stop)
    lag_reader.close()


@main.command()
@config_option
@click.option("--seconds", type=float, default=60.0, show_default=True,
              help="How long to run the synthetic traffic.")
@click.option("--rate", type=float, default=2000.0, show_default=True,
              help="Events per second per model version.")
def demo(config_path: Path | None, seconds: float, rate: float) -> None:
    """Synthetic traffic through the real stack, with live window figures."""
    from driftline.demo import run_demo

    run_demo(_config(config_path), seconds=seconds, rate_per_s=rate)


if __name__ == "__main__":
    main()
