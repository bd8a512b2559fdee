"""Every query of every Grafana dashboard returns data from the real Prometheus after live traffic.

The scenario is the demo's, compressed: ``driftline consume``, ``consume-labels``, ``evaluate``
(on ``$DRIFTLINE_METRICS_PORT``, which the local Prometheus scrapes every 5 s) and ``webhook``
(on ``$DRIFTLINE_WEBHOOK_PORT``) run on the demo's config; two models each send a stable and a
canary version with ground truth; each model has a drift reference and, after 12 s, a quality
reference; a few refused, late and unjoinable messages go in; a drill goes through the webhook
receiver; a notifier points at a closed port; then the canary of ``fraud`` drifts, slows down and
loses precision until its rollback rule fires and the rollback runs. Only then, and once the
evaluator has been scraped for longer than the longest range of any query, is each expression run
through ``/api/v1/query`` with the dashboard variables substituted: every one must return data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from alerting.metric_names import CATALOGUE
from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from driftline.cli import open_store
from driftline.config import Config, parse_config
from driftline.demo import (
    BAD_MODEL,
    BAD_VERSION,
    DEMO_STREAMS,
    demo_settings,
    ensure_topics,
    run_processes,
    save_references,
    scrape,
)
from driftline.live_traffic import LiveStream, LiveTraffic
from driftline.synthetic import TrafficSpec
from tests.conftest import REPO, produce
from tests.e2e.stack_ports import exclusive_stack_ports, metrics_port, webhook_port
from tests.e2e.traffic import wait_for

PROMETHEUS = os.environ.get("DRIFTLINE_PROMETHEUS_URL", "http://127.0.0.1:19090")
GRAFANA = REPO / "deploy" / "grafana"
# What Grafana substitutes; $__rate_interval is max(4 x scrape interval, ...) = 20 s at 5 s.
RANGE_S = 20
BUILTIN_METRICS = {"up", "scrape_samples_scraped", "scrape_duration_seconds"}
# Two selections of the model page: everything, and the canary alone on the long window.
MODEL_SELECTIONS = (
    {"$model": BAD_MODEL, "$version": ".*", "$deployment": ".*", "$window": "short"},
    {"$model": BAD_MODEL, "$version": BAD_VERSION, "$deployment": "canary", "$window": "long"},
)
COMMON = {"$__rate_interval": f"{RANGE_S}s", "$class": "positive", "$job": "driftline"}
# Queries allowed to return nothing, with the reason. Empty today: every panel gets data.
EXPECTED_EMPTY: dict[str, str] = {}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def _queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` of every panel target and annotation."""
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return found


def _substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _get(path: str, **params: str) -> Any:
    url = f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=20) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def _query(expr: str) -> list[dict[str, Any]]:
    data = _get("/api/v1/query", query=expr)
    result: list[dict[str, Any]] = data["result"]
    return result


# ---------------------------------------------------------------------------- the JSON itself


def test_dashboard_files_are_the_generators_output() -> None:
    generator = _generator()
    boards = _dashboards()
    expected = generator.all_dashboards()
    assert sorted(boards) == sorted(expected)
    for name, board in expected.items():
        on_disk = (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
        assert on_disk == generator.render(board), (
            f"{name} is stale: run `python deploy/grafana/generate.py`"
        )


def test_dashboards_query_only_catalogued_metrics_through_the_datasource_variable() -> None:
    catalogue = {metric.name for metric in CATALOGUE}
    for name, board in _dashboards().items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        variables = {variable["name"] for variable in board["templating"]["list"]}
        assert "datasource" in variables
        for where, expr in _queries(board):
            unknown = _metric_names(expr) - catalogue - BUILTIN_METRICS
            assert not unknown, f"{name} {where}: {sorted(unknown)} not in the catalogue"
            for variable in re.findall(r"\$(\w+)", expr):
                assert variable.startswith("__") or variable in variables, (name, where, variable)
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:driftline|scrape)_[a-z0-9_]+)\b", expr))
    return names | ({"up"} if re.search(r"\bup\{", expr) else set())


# ---------------------------------------------------------------------------- live data


@pytest.fixture
def ports() -> Iterator[None]:
    with exclusive_stack_ports():
        yield


def _config(run_id: str) -> dict[str, Any]:
    base = parse_config(
        {
            "kafka": {
                "bootstrap_servers": os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
            },
            "redis": {"url": os.environ.get("DRIFTLINE_REDIS_URL", "redis://127.0.0.1:16379/0")},
            "evaluator": {"metrics_port": metrics_port()},
            "alerting": {"webhook": {"port": webhook_port()}},
        }
    )
    settings = demo_settings(base, run_id, for_seconds=3.0)
    # A notifier whose deliveries fail (nothing listens on port 9): the failure counter moves.
    settings["alerting"]["notifiers"].append(
        {"type": "webhook", "url": "http://127.0.0.1:9/never", "timeout_seconds": 1}
    )
    return settings


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "DRIFTLINE_WEBHOOK_TOKEN": os.environ.get("DRIFTLINE_WEBHOOK_TOKEN", "dev-token"),
        },
    )


def _odd_messages(config: Config, run_id: str) -> None:
    """Refused events, late events and labels of unknown events: their panels need them."""
    old_ms = time.time_ns() // 1_000_000 - 2 * 3600 * 1000
    late = [
        json.dumps(
            {
                "event_id": f"late-{run_id}-{n}",
                "ts": old_ms,
                "model": "fraud",
                "version": "v41",
                "deployment": "stable",
                "latency_ms": 10,
            }
        ).encode()
        for n in range(5)
    ]
    produce(
        config.kafka.bootstrap_servers,
        config.topics.events,
        [b"not json", b'{"event_id": 1}', *late],
    )
    produce(
        config.kafka.bootstrap_servers,
        config.topics.labels,
        [json.dumps({"event_id": f"nobody-{n}", "label": "positive"}).encode() for n in range(3)],
    )


def test_every_dashboard_query_returns_data(ports: None, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:6]
    settings = _config(run_id)
    config = parse_config(settings)
    config_path = tmp_path / "driftline.yaml"
    config_path.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
    store = open_store(config)
    ensure_topics(config)
    save_references(config, store)
    ledger = RedisRollbackLedger(store.client, AlertingKeys(config.redis.key_prefix))
    streams = {
        (model, version): LiveStream(
            TrafficSpec(
                model,
                version,
                deployment,
                feature_count=5,
                latency_median_ms=latency,
                segments=(("region", ("eu", "us")),),
            ),
            rate_per_s=100,
        )
        for model, version, deployment, latency in DEMO_STREAMS
    }
    traffic = LiveTraffic(config, list(streams.values()), run_id=run_id)
    metrics_url = f"http://127.0.0.1:{metrics_port()}/metrics"
    with run_processes(config, config_path, tmp_path) as processes:
        assert "webhook" in [p.name for p in processes]
        traffic.start()
        try:
            _odd_messages(config, run_id)
            wait_for(lambda: bool(scrape(metrics_url)), 30, "the evaluator's /metrics")
            wait_for(
                lambda: _answers(f"http://127.0.0.1:{webhook_port()}/-/healthy"),
                30,
                "the webhook receiver",
            )
            assert _refused_without_credentials() == 401  # the receiver's refusals panel
            serving_since = time.monotonic()
            drill = _cli(
                "drill", "--config", str(config_path), "--via", "webhook", "--timeout", "20"
            )
            assert drill.returncode == 0, drill.stderr
            assert json.loads(drill.stdout)["decision"] == "dry_run"
            wait_for(lambda: time.monotonic() - serving_since >= 12, 20, "labelled traffic")
            for model, _, deployment, _ in DEMO_STREAMS:
                if deployment == "stable":
                    done = _cli(
                        "calibrate",
                        "--config",
                        str(config_path),
                        "--model",
                        model,
                        "--window",
                        "short",
                    )
                    assert done.returncode == 0, done.stderr
            canary = streams[(BAD_MODEL, BAD_VERSION)]
            canary.change(latency_median_ms=80.0, feature_shift=1.5, shifted_features=2)
            canary.label_accuracy = 0.6
            wait_for(
                lambda: any(e["decision"] == "executed" for e in ledger.audit_entries()),
                40,
                "the canary's rollback",
            )
            wait_for(
                lambda: time.monotonic() - serving_since >= RANGE_S + 10,
                40,
                "Prometheus to hold only this run's samples in every range",
            )
            annotation = _dashboards()["overview.json"]["annotations"]["list"][1]["expr"]
            wait_for(lambda: bool(_query(annotation)), 30, "the rollback in Prometheus", 1.0)
            # A counter that first moved a moment ago (the failed notification of the firing
            # alert) needs two scrapes in the range before increase() has a value: retry.
            deadline = time.monotonic() + 30
            while (empty := _empty_queries()) and time.monotonic() < deadline:
                time.sleep(2)
        finally:
            traffic.stop()
        for running in processes:
            assert running.process.poll() is None, running.log_path.read_text()[-3000:]
    assert empty == EXPECTED_EMPTY, f"queries without data: {json.dumps(empty, indent=1)}"


def _empty_queries() -> dict[str, str]:
    """Every query without data, by where it is; the variable queries checked on the way."""
    empty: dict[str, str] = {}
    now = str(time.time())
    start = str(time.time() - 60)
    for name, board in _dashboards().items():
        selections = MODEL_SELECTIONS if name == "model.json" else MODEL_SELECTIONS[:1]
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match, label = _label_values(variable["query"]["query"])
            values = _get(
                f"/api/v1/label/{label}/values",
                **{"match[]": _substitute(match, {**COMMON, **selections[0]})},
                start=start,
                end=now,
            )
            expected = {
                "model": BAD_MODEL,
                "version": BAD_VERSION,
                "deployment": "canary",
                "class": "positive",
                "job": "driftline",
            }[variable["name"]]
            assert expected in values, (name, variable["name"], values)
        for values in selections:
            for where, expr in _queries(board):
                query = _substitute(expr, {**COMMON, **values})
                if not _query(query):
                    empty[f"{name} {where} {values['$window']}"] = query
    return empty


def _refused_without_credentials() -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{webhook_port()}/v1/alertmanager", data=b"{}", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _label_values(query: str) -> tuple[str, str]:
    """``label_values(selector, label)`` -> (selector, label)."""
    assert query.startswith("label_values(") and query.endswith(")"), query
    selector, _, label = query[len("label_values(") : -1].rpartition(",")
    return selector.strip(), label.strip()
