"""`driftline status` against the real Redis and Kafka: windows, lag, alerts, last rollback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from detectors.window_store import KeySchema
from driftline.config import Config
from tests.conftest import (
    REPO,
    produce,
    start_consumer,
    wait_until_committed,
    write_config,
)

RULE = "canary-slow"


def _events(
    version: str, deployment: str, count: int, latency_ms: float, errors: int
) -> list[bytes]:
    now_ms = time.time_ns() // 1_000_000
    return [
        json.dumps(
            {
                "event_id": f"{version}-{n}",
                "ts": now_ms - n,
                "model": "shop",
                "version": version,
                "deployment": deployment,
                "latency_ms": latency_ms,
                "confidence": 0.9,
                "error": n < errors,
            }
        ).encode()
        for n in range(count)
    ]


def _driftline(*arguments: str, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "driftline.cli", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == returncode, done.stderr
    return done


def test_status_reports_windows_lag_alerts_and_the_last_rollback(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = stack_config(
        partitions=2,
        windows={
            "bucket_seconds": 1,
            "rollup_seconds": 2,
            "short_seconds": 60,
            "long_seconds": 120,
        },
        models={"shop": {"stable_version": "v1"}, "broken": {}},
        rules=[
            {
                "name": RULE,
                "metric": "driftline_latency_seconds",
                "match": {"quantile": "0.99", "deployment": "canary", "segment": ""},
                "relative": {"reference": {"deployment": "stable"}},
                "comparison": ">",
                "threshold": 2,
                "min_samples": 100,
                "action": "rollback",
            }
        ],
    )
    config_path = write_config(config, tmp_path)
    produce(
        kafka_bootstrap,
        config.topics.events,
        _events("v1", "stable", 300, 10.0, errors=3)
        + _events("v2", "canary", 150, 100.0, errors=15),
        keys=[b"shop"] * 450,
    )
    consumer = start_consumer(config_path)
    try:
        wait_until_committed(kafka_bootstrap, config.kafka.group_id, config.topics.events, 2)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
    # 20 messages the group has not consumed yet: the lag status must report.
    produce(kafka_bootstrap, config.topics.events, [b"{}"] * 20, keys=[b"shop"] * 20)
    # One tick of the real evaluator: the rule fires (for: 0) and the rollback is rehearsed
    # (dry_run is the default); the engine saves its alert states in Redis.
    # Another model's state edited by hand: it is left out, and shop is still reported.
    redis_client.set(KeySchema(config.redis.key_prefix).totals("broken"), "not a hash")
    evaluate = _driftline("evaluate", "--config", str(config_path), "--once", returncode=1)
    assert "Error: left out of the tick: model:broken" in evaluate.stderr

    document: dict[str, Any] = json.loads(
        _driftline("status", "--config", str(config_path), "--json").stdout
    )

    [shop] = document["models"]
    assert shop["model"] == "shop"
    assert 0 <= shop["freshness_seconds"] < 60
    by_version = {v["version"]: v for v in shop["versions"]}
    assert by_version["v1"]["deployment"] == "stable"
    assert (by_version["v1"]["window_events"], by_version["v2"]["window_events"]) == (300, 150)
    assert by_version["v1"]["events_per_second"] == 5.0  # 300 events / 60 s
    assert (by_version["v1"]["error_ratio"], by_version["v2"]["error_ratio"]) == (0.01, 0.1)
    assert abs(by_version["v2"]["p99_latency_seconds"] - 0.1) <= 0.001  # 1 % sketch accuracy
    assert [(a["rule"], a["version"], a["state"]) for a in shop["alerts"]] == [
        (RULE, "v2", "firing")
    ]
    rollback = shop["last_rollback"]
    assert (
        rollback["decision"],
        rollback["from_version"],
        rollback["to_version"],
        rollback["rule"],
    ) == ("dry_run", "v2", "v1", RULE)
    lag = document["consumer_lag"]
    assert lag["events"]["group"] == config.kafka.group_id
    assert lag["events"]["messages"] == 20
    assert lag["labels"]["messages"] == 0  # nothing was ever published on the labels topic
    assert document["evaluator_lease_holder"] is None  # --once takes no lease
    assert document["unreadable"] == ["model:broken"]

    table = _driftline("status", "--config", str(config_path)).stdout
    assert "shop" in table and "firing" in table and "dry_run v2 -> v1" in table
