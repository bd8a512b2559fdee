"""The engine's notifiers against the real Alertmanager (v2 API) and a local JSON webhook."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from typing import Any

from alerting.notifiers import AlertmanagerNotifier, WebhookNotifier
from alerting.rule_engine import RuleEngine
from driftline.alerting_config import (
    AlertingConfig,
    AlertmanagerNotifierConfig,
    RuleConfig,
    WebhookNotifierConfig,
)
from tests.recording_server import recording_server
from tests.unit.test_rule_engine import _snapshot

ALERTMANAGER = os.environ.get("DRIFTLINE_ALERTMANAGER_URL", "http://127.0.0.1:19094")


def _alerts(alertname: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"', "active": "true"})
    with urllib.request.urlopen(f"{ALERTMANAGER}/api/v2/alerts?{query}", timeout=10) as answer:
        found: list[dict[str, Any]] = json.loads(answer.read())
    return found


def test_alertmanager_receives_firing_then_resolved_alerts(unique: str) -> None:
    rule = RuleConfig.model_validate(
        {
            "name": f"notify-{unique}",
            "metric": "driftline_latency_seconds",
            "match": {"quantile": "0.99"},
            "comparison": ">",
            "threshold": 0.2,
            "min_samples": 10,
            "severity": "ticket",
            "summary": "{model} {version} p99 {value:.2f}s",
        }
    )
    engine = RuleEngine([rule], AlertingConfig())
    notifier = AlertmanagerNotifier(
        AlertmanagerNotifierConfig(type="alertmanager", url=ALERTMANAGER, resend_seconds=60),
        "http://driftline.test/",
    )
    # Ticks a little in the past, as a tick's time is by the time its notifications go out.
    now_ms = int(time.time() * 1000) - 2000
    changes = engine.evaluate(_snapshot(now_ms, [("v2", "canary", 0.5, 100)]))
    notifier.notify(changes, engine.firing(now_ms), now_ms)
    [alert] = _alerts(rule.name)
    assert alert["labels"] == {
        "alertname": rule.name,
        "severity": "ticket",
        "action": "notify",
        "model": "shop",
        "version": "v2",
        "deployment": "canary",
        "quantile": "0.99",
    }
    assert alert["annotations"]["summary"] == "shop v2 p99 0.50s"
    assert alert["annotations"]["runbook_url"] == f"docs/runbooks/{rule.name}.md"
    assert alert["generatorURL"] == "http://driftline.test/"
    later_ms = now_ms + 1000
    changes = engine.evaluate(_snapshot(later_ms, [("v2", "canary", 0.1, 100)]))
    assert [event.state for event in changes] == ["resolved"]
    notifier.notify(changes, engine.firing(later_ms), later_ms)
    deadline = time.monotonic() + 10
    while _alerts(rule.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alerts(rule.name) == []


def test_webhook_notifier_posts_state_changes() -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "p99",
            "metric": "driftline_latency_seconds",
            "match": {"quantile": "0.99"},
            "comparison": ">",
            "threshold": 0.2,
            "for": "1s",
            "min_samples": 10,
        }
    )
    engine = RuleEngine([rule], AlertingConfig())
    with recording_server() as server:
        notifier = WebhookNotifier(
            WebhookNotifierConfig(type="webhook", url=server.url + "/n", headers={"X-Team": "ml"})
        )
        for second, p99 in enumerate([0.5, 0.5, 0.1]):
            changes = engine.evaluate(_snapshot(second * 1000, [("v2", "canary", p99, 100)]))
            notifier.notify(changes, [], second * 1000)
        bodies = [json.loads(request.body) for request in server.requests]
        assert [[(a["state"], a["previous"], a["at_ms"]) for a in b["alerts"]] for b in bodies] == [
            [("firing", "pending", 1000)],
            [("resolved", "firing", 2000)],
        ]
        assert bodies[0]["alerts"][0]["starts_at_ms"] == 1000
        assert server.requests[0].headers["X-Team"] == "ml"
