"""The ``driftline`` command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from driftline.cli_options import config_option, exit_when_idle_option, runtime_option
from driftline.config import Config, ConfigError, load_config

log = logging.getLogger("driftline")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _config(path: Path | None, *, kafka_clients: bool = False) -> Config:
    """The command's config, or a ClickException naming the bad keys.

    A command that builds Kafka clients passes ``kafka_clients``: its librdkafka settings are then
    checked here, so a refused one stops it before it starts anything, whichever client would
    have met it first. Other commands skip the check: a production config's certificate paths
    need not exist where ``rules export`` or ``backtest`` run.
    """
    from consumers.kafka_settings import check_kafka_settings

    try:
        config = load_config(path)
        if kafka_clients:
            check_kafka_settings(config.kafka)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    return config


_Server = TypeVar("_Server")


def listening(host: str, port: int, bind: Callable[[], _Server]) -> _Server:
    """``bind()``'s server; a port in use or a host that does not resolve is an error naming the
    address, not a traceback."""
    try:
        return bind()
    except OSError as error:  # socket.gaierror, for a host, is one too
        address = f"[{host}]" if ":" in host else host
        reason = error.strerror or str(error)
        raise click.ClickException(f"cannot listen on {address}:{port}: {reason}") from None


def open_store(config: Config) -> Any:
    """The Redis window store described by ``config``, checked to answer."""
    import redis
    from redis.exceptions import RedisClusterException

    from detectors.stores.redis_store import RedisWindowStore, connect_redis
    from detectors.window_store import KeySchema

    settings = config.redis
    try:
        # A cluster client reads the slot map while it is built, so refused credentials or an
        # unreachable cluster surface here, as RedisClusterException (not a RedisError).
        client = connect_redis(
            settings.url,
            username=settings.username,
            password=settings.password,
            ssl=settings.ssl,
            ssl_ca_certs=settings.ssl_ca_certs,
        )
        client.ping()
    except ValueError as error:  # redis-py's parse of a malformed URL
        raise click.ClickException(f"redis.url = {settings.url!r}: {error}") from None
    except (redis.RedisError, RedisClusterException) as error:
        raise click.ClickException(
            f"redis.url = {settings.url!r}: cannot connect: {error}"
        ) from None
    return RedisWindowStore(client, layout_from_config(config), KeySchema(settings.key_prefix))


def reference_cache(config: Config, store: Any) -> Any:
    """The drift references of the Redis ``store``'s models, refreshed in the background."""
    from detectors.reference_cache import ReferenceCache
    from detectors.stores.redis_reference_store import RedisReferenceStore

    references = RedisReferenceStore(store.client, store.keys)
    return ReferenceCache(references, refresh_seconds=config.drift.reference_refresh_seconds)


def layout_from_config(config: Config) -> Any:
    from detectors.window_update import WindowLayout

    windows = config.windows
    return WindowLayout(
        bucket_ms=windows.bucket_seconds * 1000,
        rollup_ms=windows.rollup_seconds * 1000,
        short_ms=windows.short_seconds * 1000,
        long_ms=windows.long_seconds * 1000,
        late_tolerance_ms=config.consumer.late_tolerance_seconds * 1000,
        fast_ms=config.drift.fast_window_seconds * 1000,
    )


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the current batch, then exiting", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def main(log_level: str) -> None:
    """driftline: a streaming monitor for machine-learning models in production."""
    _setup_logging(log_level)


@main.command()
@config_option
@runtime_option
@exit_when_idle_option
def consume(config_path: Path | None, runtime: str, exit_when_idle: float | None) -> None:
    """Consume the events topic into the Redis windows (exactly once)."""
    from consumers.exceptions import StorePositionsPastTheEnd, StoreStateInconsistent
    from consumers.kafka_consumer import EventConsumer

    config = _config(config_path, kafka_clients=True)
    store = open_store(config)
    binner_for = reference_cache(config, store).binner_for
    if runtime == "faust":
        from consumers.faust_app import CompressionUnsupported, FaustEventConsumer

        try:
            consumer: EventConsumer | FaustEventConsumer = FaustEventConsumer(
                config, store, feature_binner_for=binner_for
            )
        except (ConfigError, CompressionUnsupported) as error:
            raise click.ClickException(str(error)) from None
    else:
        consumer = EventConsumer(config, store, feature_binner_for=binner_for)
    _stop_on_signals(consumer.stop)
    started = time.monotonic()
    try:
        consumer.run(max_idle_s=exit_when_idle)
    except (StoreStateInconsistent, StorePositionsPastTheEnd) as error:  # nothing is committed
        raise click.ClickException(str(error)) from None
    log.info(
        "stopped after %d batches, %d events applied in %.1fs",
        consumer.batches,
        consumer.events_applied,
        time.monotonic() - started,
    )


@main.command()
@config_option
@click.option(
    "--port", type=click.IntRange(0, 65_535), default=None, help="Override evaluator.metrics_port."
)
@click.option("--once", is_flag=True, help="Run one tick, print the figures as JSON, exit.")
def evaluate(config_path: Path | None, port: int | None, once: bool) -> None:
    """Compute window figures every tick and serve them on /metrics."""
    from prometheus_client import CollectorRegistry, start_http_server

    from alerting.consumer_lag import ConsumerLagReader
    from alerting.evaluator import Evaluator
    from alerting.snapshot import SnapshotCollector

    config = _config(config_path, kafka_clients=True)
    store = open_store(config)
    collector = SnapshotCollector()
    lag_reader = ConsumerLagReader(
        config.kafka.bootstrap_servers,
        config.kafka.group_id,
        [config.topics.events],
        **config.kafka.client,
    )
    from alerting.alerting_step import build_alerting_step

    try:
        alerting_step = build_alerting_step(config, store.client)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    hooks = [] if alerting_step is None else [alerting_step]
    from alerting.drift_figures import DriftFigures
    from alerting.quality_figures import QualityFigures, QualityReferences

    quality_references = QualityReferences(store, config.quality.reference_refresh_seconds)
    quality = QualityFigures(config, store, quality_references.reference)
    drift = DriftFigures(
        config.drift,
        reference_cache(config, store).reference,
        confidence_bins=config.monitoring.confidence_bins,
    )
    from alerting.evaluator_lease import EvaluatorLease
    from alerting.rollback_ledger import AlertingKeys

    lease = EvaluatorLease(
        store.client,
        AlertingKeys(config.redis.key_prefix).evaluator_lease(),
        ttl_ms=int(config.evaluator.lease_ttl_seconds * 1000),
    )
    evaluator = Evaluator(
        config,
        store,
        collector,
        contributors=[drift, quality],
        lag_reader=lag_reader,
        hooks=[quality, *hooks],
        lease=None if once else lease,
        leave_out_failures=True,
    )
    if once:
        snapshot = evaluator.tick()
        if alerting_step is not None:
            alerting_step.close()
        for sample in snapshot.samples:
            labels = dict(zip(sample.metric.labels, sample.labels, strict=True))
            click.echo(
                json.dumps({"metric": sample.metric.name, "labels": labels, "value": sample.value})
            )
        if evaluator.errors:  # the figures above lack these parts; the log says why
            raise click.ClickException(f"left out of the tick: {', '.join(evaluator.errors)}")
        return
    registry = CollectorRegistry()
    registry.register(collector)
    listen_port = config.evaluator.metrics_port if port is None else port
    listening(
        config.evaluator.metrics_host,
        listen_port,
        lambda: start_http_server(
            listen_port, addr=config.evaluator.metrics_host, registry=registry
        ),
    )
    log.info("serving /metrics on %s:%d", config.evaluator.metrics_host, listen_port)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    evaluator.run(stop)
    if alerting_step is not None:
        alerting_step.close()
    lag_reader.close()


@main.command()
@config_option
@click.option(
    "--seconds",
    type=float,
    default=150.0,
    show_default=True,
    help="Longest the scenario may run; it ends 10 s after the rollback.",
)
@click.option(
    "--rate",
    type=float,
    default=200.0,
    show_default=True,
    help="Events per second per model version.",
)
@click.option(
    "--traffic-only",
    is_flag=True,
    help="Only publish the scenario's traffic to the processes of --config (docker compose).",
)
@click.option("--metrics-url", default=None, help="Their evaluator's /metrics (--traffic-only).")
def demo(
    config_path: Path | None,
    seconds: float,
    rate: float,
    traffic_only: bool,
    metrics_url: str | None,
) -> None:
    """A canary drifts, slows down and loses precision; watch it be rolled back (docs/demo.md)."""
    from driftline.demo import run_demo

    rolled_back = run_demo(
        _config(config_path, kafka_clients=True),
        seconds=seconds,
        rate_per_s=rate,
        traffic_only=traffic_only,
        config_path=config_path,
        metrics_url=metrics_url,
    )
    if not rolled_back:
        raise click.ClickException(f"no rollback within {seconds:g}s")


from driftline.alerting_commands import drill, rules, webhook  # noqa: E402

main.add_command(rules)
main.add_command(webhook)
main.add_command(drill)

from driftline.backtest_command import backtest  # noqa: E402
from driftline.baseline_command import baseline  # noqa: E402

main.add_command(baseline)
main.add_command(backtest)

from driftline.quality_commands import calibrate, consume_labels  # noqa: E402

main.add_command(consume_labels)
main.add_command(calibrate)

from driftline.rollout_commands import gate, verdict  # noqa: E402

main.add_command(verdict)
main.add_command(gate)

from driftline.status_command import status  # noqa: E402

main.add_command(status)

if __name__ == "__main__":
    main()
