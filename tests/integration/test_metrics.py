"""/metrics over HTTP, parsed with prometheus-client's parser: the expected series and values."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import msgspec
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from alerting import metric_names as names
from alerting.consumer_lag import ConsumerLagReader
from alerting.evaluator import Evaluator
from alerting.snapshot import SnapshotCollector
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config, ModelConfig
from tests.conftest import event_consumer, produce


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


@pytest.fixture
def traffic(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
) -> tuple[Config, RedisWindowStore, dict[str, np.ndarray]]:
    config = stack_config(partitions=2, evaluator={"max_series": 500})
    rng = np.random.default_rng(5)
    now_ms = int(time.time() * 1000)
    columns = {
        "latency": rng.lognormal(np.log(30), 0.6, 3000).round(3),
        "confidence": rng.beta(6, 2, 3000).round(4),
        "error": rng.random(3000) < 0.05,
    }
    values = [
        msgspec.json.encode(
            {
                "event_id": f"e{i}",
                "ts": now_ms - (i % 100) * 100,
                "model": "fraud",
                "version": "v7",
                "deployment": "canary",
                "latency_ms": float(columns["latency"][i]),
                "confidence": float(columns["confidence"][i]),
                "error": bool(columns["error"][i]),
            }
        )
        for i in range(3000)
    ] + [b"not json", b"[]"]
    produce(kafka_bootstrap, config.topics.events, values, [b"fraud"] * len(values))
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    event_consumer(runtime, config, store).run(max_idle_s=3)
    return config, store, columns


def test_metrics_endpoint_serves_window_figures(
    traffic: tuple[Config, RedisWindowStore, dict[str, np.ndarray]],
) -> None:
    config, store, columns = traffic
    registry = CollectorRegistry()
    collector = SnapshotCollector()
    registry.register(collector)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    lag = ConsumerLagReader(
        config.kafka.bootstrap_servers, config.kafka.group_id, [config.topics.events]
    )
    try:
        Evaluator(config, store, collector, lag_reader=lag).tick()
        metrics = _scrape(server.server_port)
    finally:
        lag.close()
        server.shutdown()

    series = {"model": "fraud", "version": "v7", "deployment": "canary", "segment": ""}
    assert metrics[("driftline_events_total", _labels(**series))] == 3000
    assert metrics[("driftline_bad_events_total", _labels(reason="bad_json"))] == 1
    assert metrics[("driftline_bad_events_total", _labels(reason="not_object"))] == 1
    for window in ("short", "long"):
        labels = {**series, "window": window}
        assert metrics[("driftline_window_events", _labels(**labels))] == 3000
        assert metrics[("driftline_error_ratio", _labels(**labels))] == pytest.approx(
            columns["error"].mean(), abs=1e-12
        )
        assert metrics[("driftline_confidence_mean_ratio", _labels(**labels))] == pytest.approx(
            columns["confidence"].mean(), abs=1e-6
        )
        assert metrics[("driftline_low_confidence_ratio", _labels(**labels))] == pytest.approx(
            (columns["confidence"] < 0.5).mean(), abs=1e-12
        )
        for q in ("0.5", "0.95", "0.99"):
            value = metrics[("driftline_latency_seconds", _labels(**labels, quantile=q))]
            exact = np.quantile(columns["latency"], float(q)) / 1000
            assert abs(value - exact) <= 0.01 * exact
    assert metrics[
        ("driftline_throughput_events_per_second", _labels(**series, window="short"))
    ] == pytest.approx(3000 / 300)
    lags = [
        value for (name, _), value in metrics.items() if name == "driftline_consumer_lag_messages"
    ]
    assert lags == [0.0, 0.0]
    assert 0 <= metrics[("driftline_freshness_seconds", _labels(model="fraud"))] < 60
    assert metrics[("driftline_evaluator_ticks_total", ())] == 1
    assert metrics[("driftline_metrics_series_dropped", ())] == 0


# The cap is the evaluator's business: one runtime's windows are enough.
@pytest.mark.parametrize("runtime", ["confluent"])
def test_series_cap_drops_and_counts(
    traffic: tuple[Config, RedisWindowStore, dict[str, np.ndarray]],
) -> None:
    config, store, _ = traffic
    capped = config.model_copy(
        update={"evaluator": config.evaluator.model_copy(update={"max_series": 1})}
    )
    collector = SnapshotCollector()
    snapshot = Evaluator(capped, store, collector).tick()
    # Each windowed metric has two label sets (short and long); the cap keeps one of each.
    names = [sample.metric.name for sample in snapshot.samples]
    assert names.count("driftline_window_events") == 1
    assert names.count("driftline_latency_seconds") == 1
    dropped = [
        s.value for s in snapshot.samples if s.metric.name == "driftline_metrics_series_dropped"
    ]
    assert dropped[0] > 0


@pytest.mark.parametrize("runtime", ["confluent"])
def test_a_model_whose_state_cannot_be_read_is_left_out_alone(
    traffic: tuple[Config, RedisWindowStore, dict[str, np.ndarray]], redis_client: redis.Redis
) -> None:
    """A key edited by hand (here another model's totals made a string) failed every tick, so
    no model had figures, for as long as the key stayed."""
    config, store, _ = traffic
    config = config.model_copy(update={"models": {**config.models, "broken": ModelConfig()}})
    redis_client.set(store.keys.totals("broken"), "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # backtest, the gate
        Evaluator(config, store, SnapshotCollector()).tick()
    evaluator = Evaluator(config, store, SnapshotCollector(), leave_out_failures=True)
    fraud = {"model": "fraud", "version": "v7", "deployment": "canary", "segment": ""}
    for tick in (1, 2):
        snapshot = evaluator.tick()
        assert snapshot.value(names.EVENTS_TOTAL, **fraud) == 3000
        assert snapshot.value(names.FRESHNESS, model="broken") is None
        assert snapshot.value(names.EVALUATOR_ERRORS_TOTAL, part="model:broken") == tick
        assert snapshot.value(names.TICKS_TOTAL) == tick
    redis_client.delete(store.keys.totals("broken"))
    snapshot = evaluator.tick()
    assert snapshot.value(names.FRESHNESS, model="broken") is not None
    assert snapshot.value(names.EVALUATOR_ERRORS_TOTAL, part="model:broken") == 2
