"""``driftline drill``: a synthetic rollback incident through the real path, to practise on.

``via`` picks where the incident enters:

* ``alertmanager`` (the whole Prometheus path): the alert is posted to Alertmanager's v2 API with
  ``action="rollback"``; Alertmanager routes it to the running webhook receiver, which hands it
  to the executor. The drill waits for the decision in the audit stream, then resolves the alert.
* ``webhook``: an Alertmanager webhook payload (version 4) is posted, authenticated, straight to
  the running receiver.
* ``executor``: the executor is called in this process (no receiver needed).

A drill is a dry run unless ``execute`` is set (and ``alerting.rollback.dry_run`` is off): the
decision, the target and what every action would do are audited, and nothing is rolled back.
Drill alerts carry ``drill="true"``, so Alertmanager routes and silences can tell them apart.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import redis

from alerting.notifiers import rfc3339
from alerting.rollback_actions import build_actions
from alerting.rollback_executor import RollbackExecutor, RollbackRequest, incident_name
from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from alerting.webhook_receiver import PATH, SIGNATURE_HEADER, load_secrets, sign
from driftline.alerting_config import AlertmanagerNotifierConfig, RuleConfig
from driftline.config import Config, ConfigError

__all__ = ["post_json", "run_drill"]


def _rule(config: Config, name: str | None) -> RuleConfig:
    rollback_rules = [rule for rule in config.rules if rule.action == "rollback"]
    if name is None:
        if not rollback_rules:
            raise ConfigError("rules: no rule has action: rollback; nothing to drill")
        return rollback_rules[0]
    for rule in rollback_rules:
        if rule.name == name:
            return rule
    raise ConfigError(
        f"--rule {name!r}: not a rollback rule (have: {[r.name for r in rollback_rules]})"
    )


def post_json(url: str, body: Any, headers: dict[str, str], timeout_s: float) -> tuple[int, Any]:
    """POST ``body`` as JSON: the status and the parsed answer (its text for an HTTP error);
    ``ConnectionError`` when no answer comes."""
    data = json.dumps(body).encode()
    try:
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
            return int(response.status), json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    # A malformed URL ("not a url", "http://[::1") is a ValueError.
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ConnectionError(f"POST {url}: {error}") from None


def run_drill(
    config: Config,
    client: redis.Redis,
    *,
    rule_name: str | None = None,
    model: str | None = None,
    version: str = "drill",
    via: str = "alertmanager",
    execute: bool = False,
    alertmanager_url: str | None = None,
    webhook_url: str | None = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Send one synthetic incident; return the audit entry of its decision."""
    rule = _rule(config, rule_name)
    model = model or next(iter(config.models), "drill-model")
    starts_at_ms = time.time_ns() // 1_000_000
    drill_id = uuid.uuid4().hex[:12]
    value = rule.threshold * 2 if rule.threshold else 1.0
    labels = {
        "alertname": rule.name,
        "action": "rollback",
        "severity": rule.severity,
        "model": model,
        "version": version,
        "drill": "true",
        "drill_id": drill_id,
        **({} if execute else {"dry_run": "true"}),
    }
    annotations = {
        "summary": f"drill {drill_id}: synthetic incident for {rule.name}",
        "runbook_url": config.alerting.runbook_url(rule),
        "value": f"{value:g}",
    }
    ledger = RedisRollbackLedger(client, AlertingKeys(config.redis.key_prefix))
    incident = incident_name(rule.name, model, version, starts_at_ms)
    if via == "executor":
        executor = RollbackExecutor(
            config, ledger, build_actions(config.alerting.rollback.actions, config, client)
        )
        try:
            decision = executor.handle(
                RollbackRequest(
                    rule=rule.name,
                    model=model,
                    version=version,
                    starts_at_ms=starts_at_ms,
                    value=value,
                    threshold=rule.threshold,
                    source="drill",
                    summary=annotations["summary"],
                    runbook_url=annotations["runbook_url"],
                    dry_run=not execute,
                )
            )
        finally:
            executor.close()
        return decision.audit_entry()
    if via == "webhook":
        settings = config.alerting.webhook
        url = webhook_url or f"http://{settings.host}:{settings.port}{PATH}"
        alert = {
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts_at_ms),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": drill_id,
        }
        payload = {
            "version": "4",
            "groupKey": f"drill:{drill_id}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "driftline-drill",
            "groupLabels": {},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "",
            "alerts": [alert],
        }
        body = json.dumps(payload).encode()
        token, secret = load_secrets(settings)
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.decode()}"
        elif secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        status, answer = post_json(url, payload, headers, timeout_s)
        if status != 200:
            raise ConnectionError(f"POST {url}: HTTP {status}: {answer}")
    elif via == "alertmanager":
        found = alertmanager_url or next(
            (n.url for n in config.alerting.notifiers if isinstance(n, AlertmanagerNotifierConfig)),
            None,
        )
        if found is None:
            raise ConfigError("--alertmanager-url is needed (no alertmanager notifier configured)")
        alerts_url = found.rstrip("/") + "/api/v2/alerts"
        alert = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts_at_ms),
            "endsAt": rfc3339(starts_at_ms + round(timeout_s * 1000) + 60_000),
        }
        status, answer = post_json(alerts_url, [alert], {}, 10.0)
        if status != 200:
            raise ConnectionError(f"POST {alerts_url}: HTTP {status}: {answer}")
    else:
        raise ConfigError(f"--via {via!r}: use alertmanager, webhook or executor")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for entry in reversed(ledger.audit_entries(200)):
                if entry.get("incident") == incident:
                    return entry
            time.sleep(0.25)
        raise TimeoutError(
            f"no decision for drill incident {incident!r} within {timeout_s:g}s: is the webhook "
            'receiver running and Alertmanager routing action="rollback" to it?'
        )
    finally:
        if via == "alertmanager":
            ended = dict(alert, endsAt=rfc3339(time.time_ns() // 1_000_000))
            post_json(alerts_url, [ended], {}, 10.0)
