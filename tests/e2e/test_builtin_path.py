"""The built-in path end to end: Kafka -> consumer -> Redis windows -> `driftline evaluate`
(rule engine) -> rollback on the control topic and a webhook, exactly once; thin traffic never."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from driftline.config import Config
from tests.conftest import REPO, start_consumer, write_config
from tests.e2e.traffic import LiveTraffic, Stream, free_port, scrape, wait_for
from tests.integration.test_rollback_executor import control_messages
from tests.recording_server import RecordingServer, recording_server

RULE = "canary-p99-vs-stable"


def _config(stack_config: Callable[..., Config], server: RecordingServer, port: int) -> Config:
    return stack_config(
        partitions=1,
        # The long window is read from rollups (>= 10 rollups): the layout then keeps events
        # for the long window; with no window on rollups it would count every event as late.
        windows={"bucket_seconds": 1, "rollup_seconds": 2, "short_seconds": 4, "long_seconds": 20},
        evaluator={"tick_seconds": 1, "metrics_port": port},
        models={"shop": {"stable_version": "v1"}},
        rules=[
            {
                "name": RULE,
                "metric": "driftline_latency_seconds",
                "match": {"quantile": "0.99", "deployment": "canary"},
                "relative": {"reference": {"deployment": "stable"}},
                "comparison": ">",
                "threshold": 2,
                "for": "3s",
                "windows": "both",
                "min_samples": 100,
                "severity": "page",
                "action": "rollback",
            }
        ],
        alerting={
            "notifiers": [{"type": "log"}, {"type": "webhook", "url": server.url + "/notify"}],
            "rollback": {
                "dry_run": False,
                "cooldown_seconds": 600,
                "actions": [
                    {"type": "webhook", "url": server.url + "/rollback"},
                    {"type": "kafka_control"},
                ],
            },
        },
    )


@contextmanager
def _evaluate(config_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = config_path.parent / f"evaluate-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", "evaluate", "--config", str(config_path)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()


def _alert_states(port: int) -> dict[tuple[str, str], str]:
    """``(version, deployment) -> state`` of the rule's alerts on ``/metrics``."""
    states: dict[tuple[str, str], str] = {}
    try:
        metrics = scrape(port)
    except OSError:  # not serving yet
        return states
    for (name, labels), value in metrics.items():
        found = dict(labels)
        if name == "driftline_alert_state" and found["rule"] == RULE and value == 1:
            states[(found["version"], found["deployment"])] = found["state"]
    return states


def test_canary_latency_degrades_and_is_rolled_back_exactly_once(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    port = free_port()
    with recording_server() as server:
        config = _config(stack_config, server, port)
        config_path = write_config(config, tmp_path)
        canary = Stream("v2", "canary", rate_per_s=150)
        traffic = LiveTraffic(
            kafka_bootstrap,
            config.topics.events,
            "shop",
            [Stream("v1", "stable", rate_per_s=150), canary],
        ).start()
        consumer = start_consumer(config_path)
        try:
            with _evaluate(config_path):
                wait_for(
                    lambda: _alert_states(port).get(("v2", "canary")) == "inactive",
                    40,
                    "the healthy canary to be evaluated",
                )
                degraded_ms = time.time_ns() // 1_000_000
                canary.latency_median_ms = 200.0
                wait_for(lambda: server.received("POST", "/rollback"), 40, "the rollback")
                # Keep the bad canary running: the alert keeps firing, nothing is repeated.
                time.sleep(4)
                assert _alert_states(port)[("v2", "canary")] == "firing"
        finally:
            traffic.stop()
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
        [order] = server.received("POST", "/rollback")
        body: dict[str, Any] = json.loads(order.body)
        assert (body["model"], body["from_version"], body["to_version"], body["rule"]) == (
            "shop",
            "v2",
            "v1",
            RULE,
        )
        assert body["value"] > 2 and body["threshold"] == 2
        assert set(body["values"]) == {"short", "long"}
        # Fired after `for`: never before the degradation plus 3 s of breaching ticks.
        assert body["starts_at_ms"] >= degraded_ms + 3000
        firing = [json.loads(r.body)["alerts"] for r in server.received("POST", "/notify")]
        states = [
            (alert["state"], alert["labels"]["version"]) for batch in firing for alert in batch
        ]
        assert states == [("firing", "v2")]
        messages = control_messages(kafka_bootstrap, config.topics.control, expect=1)
        assert [
            (m["model"], m["from_version"], m["to_version"], m["incident"]) for m in messages
        ] == [("shop", "v2", "v1", body["incident"])]
        ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
        [entry] = ledger.audit_entries()
        assert (entry["decision"], entry["source"], entry["incident"]) == (
            "executed",
            "engine",
            body["incident"],
        )
        assert [a["ok"] for a in json.loads(entry["actions"])] == [True, True]


def test_thin_canary_traffic_is_nodata_and_never_rolled_back(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    port = free_port()
    with recording_server() as server:
        config = _config(stack_config, server, port)
        config_path = write_config(config, tmp_path)
        # The canary is ten times slower from the start, but sends 5 events/s: 20 in the short
        # window, far below min_samples 100. Argo Rollouts and Flagger would roll this back.
        traffic = LiveTraffic(
            kafka_bootstrap,
            config.topics.events,
            "shop",
            [
                Stream("v1", "stable", rate_per_s=150),
                Stream("v2", "canary", rate_per_s=5, latency_median_ms=200.0),
            ],
        ).start()
        consumer = start_consumer(config_path)
        try:
            with _evaluate(config_path):
                wait_for(
                    lambda: _alert_states(port).get(("v2", "canary")) == "nodata",
                    40,
                    "the thin canary to be nodata",
                )
                time.sleep(6)  # twice `for`, and the long window, in nodata
                assert _alert_states(port)[("v2", "canary")] == "nodata"
                metrics = scrape(port)
        finally:
            traffic.stop()
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
        canary_events = metrics[
            (
                "driftline_window_events",
                (
                    ("deployment", "canary"),
                    ("model", "shop"),
                    ("segment", ""),
                    ("version", "v2"),
                    ("window", "short"),
                ),
            )
        ]
        assert 0 < canary_events < 100
        assert server.received("POST", "/rollback") == []
        assert server.received("POST", "/notify") == []  # nodata is not a page either
        ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
        assert ledger.audit_entries() == []
        assert control_messages(kafka_bootstrap, config.topics.control, expect=1, timeout_s=3) == []
