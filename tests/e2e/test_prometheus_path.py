"""The Prometheus path end to end: `driftline evaluate` /metrics -> Prometheus (exported rules)
-> Alertmanager -> `driftline webhook` -> one rollback, although Alertmanager re-sends.

Uses the stack's fixed ports (Prometheus scrapes 18000, Alertmanager calls 18080), so it holds
``tests.e2e.stack_ports``' lock for its whole run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import yaml

from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from alerting.rule_export import prometheus_rule_file
from driftline.config import Config
from tests.conftest import REPO, start_consumer, write_config
from tests.e2e.stack_ports import exclusive_stack_ports, metrics_port, webhook_port
from tests.e2e.traffic import LiveTraffic, Stream, wait_for
from tests.integration.test_rollback_executor import control_messages
from tests.recording_server import recording_server

PROMETHEUS = os.environ.get("DRIFTLINE_PROMETHEUS_URL", "http://127.0.0.1:19090")
RULES_DIR = Path(
    os.environ.get(
        "DRIFTLINE_PROMETHEUS_RULES_DIR", str(Path.home() / ".cache/driftline/stack/rules")
    )
)


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _reload_prometheus() -> None:
    request = urllib.request.Request(PROMETHEUS + "/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def _loaded_rules() -> set[str]:
    answer = _get(PROMETHEUS + "/api/v1/rules?type=alert")
    assert isinstance(answer, dict)
    return {rule["name"] for group in answer["data"]["groups"] for rule in group["rules"]}


@contextmanager
def _rules_in_prometheus(config: Config, name: str) -> Iterator[None]:
    path = RULES_DIR / f"{name}.yml"
    path.write_text(
        yaml.safe_dump(prometheus_rule_file(config.rules, config.alerting)), encoding="utf-8"
    )
    try:
        _reload_prometheus()
        wanted = {rule.name for rule in config.rules}
        wait_for(lambda: wanted <= _loaded_rules(), 30, "Prometheus to load the rules")
        yield
    finally:
        path.unlink()
        _reload_prometheus()


@contextmanager
def _process(config_path: Path, *arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    log_path = config_path.parent / f"{arguments[0]}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *arguments, "--config", str(config_path)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "DRIFTLINE_WEBHOOK_TOKEN": os.environ.get("DRIFTLINE_WEBHOOK_TOKEN", "dev-token"),
            },
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


def _healthy(port: int) -> bool:
    try:
        return bool(_get(f"http://127.0.0.1:{port}/-/healthy"))
    except OSError:
        return False


@pytest.fixture
def ports() -> Iterator[None]:
    with exclusive_stack_ports():
        yield


def test_prometheus_alertmanager_webhook_rolls_back_once(
    ports: None,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    unique: str,
    tmp_path: Path,
) -> None:
    model, rule = f"shop{unique}", f"canary-p99-{unique}"
    with recording_server() as server:
        config = stack_config(
            partitions=1,
            windows={
                "bucket_seconds": 1,
                "rollup_seconds": 2,
                "short_seconds": 10,
                "long_seconds": 20,
            },
            evaluator={"tick_seconds": 1, "metrics_port": metrics_port()},
            models={model: {"stable_version": "v1", "segments": ["region"]}},
            rules=[
                {
                    "name": rule,
                    "metric": "driftline_latency_seconds",
                    "match": {"quantile": "0.99", "deployment": "canary"},
                    "relative": {"reference": {"deployment": "stable"}},
                    "comparison": ">",
                    "threshold": 2,
                    "for": "5s",
                    "min_samples": 100,
                    "severity": "page",
                    "action": "rollback",
                }
            ],
            alerting={
                # Only the Prometheus path rolls back here.
                "engine": {"enabled": False},
                "webhook": {"port": webhook_port()},
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
        config_path = write_config(config, tmp_path)
        eu_canary = Stream("v2", "canary", 100, segment={"region": "eu"})
        us_canary = Stream("v2", "canary", 100, segment={"region": "us"})
        traffic = LiveTraffic(
            kafka_bootstrap,
            config.topics.events,
            model,
            [
                Stream("v1", "stable", 100, segment={"region": "eu"}),
                Stream("v1", "stable", 100, segment={"region": "us"}),
                eu_canary,
                us_canary,
            ],
        ).start()
        consumer = start_consumer(config_path)
        ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
        try:
            with (
                _process(config_path, "evaluate"),
                _process(config_path, "webhook"),
                _rules_in_prometheus(config, f"e2e-{unique}"),
            ):
                wait_for(lambda: _healthy(webhook_port()), 30, "the webhook receiver")
                time.sleep(3)  # windows fill with healthy traffic, scraped at least once
                eu_canary.latency_median_ms = 200.0
                wait_for(
                    lambda: server.received("POST", "/rollback"),
                    60,
                    "Alertmanager to call the receiver and the rollback to run",
                )
                # A second segment degrades: its alert joins the group, and Alertmanager
                # re-sends the whole group, the alerts already acted on included.
                us_canary.latency_median_ms = 200.0
                wait_for(
                    lambda: ledger.webhook_counts().get("duplicate", 0) >= 1,
                    60,
                    "Alertmanager to re-send the alerts already handled",
                )
                wait_for(
                    lambda: any(
                        e["decision"] == "declined_cooldown" for e in ledger.audit_entries()
                    ),
                    30,
                    "the new segment's incident to be declined (cooldown)",
                )
        finally:
            traffic.stop()
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
        [order] = server.received("POST", "/rollback")
        body = json.loads(order.body)
        assert (
            body["model"],
            body["from_version"],
            body["to_version"],
            body["rule"],
            body["source"],
        ) == (model, "v2", "v1", rule, "alertmanager")
        assert body["value"] > 2
        executed = [e for e in ledger.audit_entries() if e["decision"] == "executed"]
        assert [e["incident"] for e in executed] == [body["incident"]]
        messages = control_messages(kafka_bootstrap, config.topics.control, expect=1)
        assert [(m["model"], m["to_version"], m["incident"]) for m in messages] == [
            (model, "v1", body["incident"])
        ]
        counts = ledger.webhook_counts()
        assert counts["handled"] >= 2 and counts["duplicate"] >= 1


def test_drill_goes_through_alertmanager_and_the_receiver(
    ports: None,
    stack_config: Callable[..., Config],
    redis_client: redis.Redis,
    unique: str,
    tmp_path: Path,
) -> None:
    model, rule = f"drill{unique}", f"drill-rule-{unique}"
    with recording_server() as server:
        config = stack_config(
            partitions=1,
            models={model: {"stable_version": "v1"}},
            rules=[
                {
                    "name": rule,
                    "metric": "driftline_error_ratio",
                    "comparison": ">",
                    "threshold": 0.1,
                    "action": "rollback",
                }
            ],
            alerting={
                "webhook": {"port": webhook_port()},
                "rollback": {
                    "dry_run": False,
                    "actions": [{"type": "webhook", "url": server.url + "/rollback"}],
                },
            },
        )
        config_path = write_config(config, tmp_path)
        alertmanager = os.environ.get("DRIFTLINE_ALERTMANAGER_URL", "http://127.0.0.1:19094")
        drill = [
            sys.executable,
            "-m",
            "driftline.cli",
            "drill",
            "--config",
            str(config_path),
            "--via",
            "alertmanager",
            "--alertmanager-url",
            alertmanager,
            "--timeout",
            "30",
        ]
        with _process(config_path, "webhook"):
            wait_for(lambda: _healthy(webhook_port()), 30, "the webhook receiver")
            rehearsal = subprocess.run(drill, cwd=REPO, capture_output=True, text=True, check=False)
            assert rehearsal.returncode == 0, rehearsal.stderr
            entry = json.loads(rehearsal.stdout)
            assert (entry["decision"], entry["source"], entry["dry_run"]) == (
                "dry_run",
                "alertmanager",
                "true",
            )
            assert (entry["model"], entry["from_version"], entry["to_version"]) == (
                model,
                "drill",
                "v1",
            )
            assert server.requests == []  # a rehearsal runs no action
            real = subprocess.run(
                [*drill, "--execute"], cwd=REPO, capture_output=True, text=True, check=False
            )
            assert real.returncode == 0, real.stderr
            assert json.loads(real.stdout)["decision"] == "executed"
            [order] = server.received("POST", "/rollback")
            assert json.loads(order.body)["incident"] == json.loads(real.stdout)["incident"]
