"""The Alertmanager webhook receiver on real Redis: 4xx change nothing; re-sends act once."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from alerting.rollback_actions import build_actions
from alerting.rollback_executor import RollbackExecutor
from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from alerting.webhook_receiver import PATH, WebhookReceiver, serve, sign
from driftline.cli import main
from driftline.config import Config, ConfigError
from tests.conftest import write_config
from tests.recording_server import RecordingServer, recording_server

TOKEN = b"s3cret-token"
HMAC_SECRET = b"hmac-secret"


@dataclass
class Receiver:
    port: int
    ledger: RedisRollbackLedger
    actions: RecordingServer
    client: redis.Redis
    prefix: str
    config: Config

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", PATH, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def state(self) -> tuple[int, list[str], int]:
        """What a request may change: audit entries, alerting keys, rollback orders sent (all
        but the count of refusals, which every refusal adds to)."""
        refusals = self.ledger.keys.webhook_refusals()
        keys = sorted(
            key
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)
            if key != refusals
        )
        return len(self.ledger.audit_entries()), keys, len(self.actions.requests)


@pytest.fixture
def receiver(stack_config: Callable[..., Config], redis_client: redis.Redis) -> Iterator[Receiver]:
    with recording_server() as actions:
        config = stack_config(
            partitions=1,
            models={"shop": {"stable_version": "v1"}},
            rules=[
                {
                    "name": "canary-p99",
                    "metric": "driftline_latency_seconds",
                    "match": {"quantile": "0.99"},
                    "comparison": ">",
                    "threshold": 0.2,
                    "action": "rollback",
                }
            ],
            alerting={
                "rollback": {
                    "dry_run": False,
                    "cooldown_seconds": 0,
                    "actions": [{"type": "webhook", "url": actions.url + "/order"}],
                },
                "webhook": {"max_body_bytes": 4096},
            },
        )
        ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
        executor = RollbackExecutor(
            config, ledger, build_actions(config.alerting.rollback.actions, config, redis_client)
        )
        handler = WebhookReceiver(config, ledger, executor, token=TOKEN, hmac_secret=HMAC_SECRET)
        server = serve(handler, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Receiver(
                int(server.server_address[1]),
                ledger,
                actions,
                redis_client,
                config.redis.key_prefix,
                config,
            )
        finally:
            server.shutdown()
            server.server_close()


def _payload(status: str = "firing", **labels: str) -> dict[str, Any]:
    alert_labels = {
        "alertname": "canary-p99",
        "action": "rollback",
        "model": "shop",
        "version": "v2",
        "deployment": "canary",
        "job": "driftline",
        **labels,
    }
    alert = {
        "status": status,
        "labels": alert_labels,
        "annotations": {
            "summary": "canary slow",
            "value": "0.5",
            "runbook_url": "docs/runbooks/canary-p99.md",
        },
        "startsAt": "2024-05-01T10:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "0c4f3b2a1d9e8f77",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="canary-p99"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollback-webhook",
        "groupLabels": {},
        "commonLabels": alert_labels,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": [alert],
    }


def _bearer(token: bytes = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.decode()}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (json.dumps(_payload()).encode(), {}, 401),
        (json.dumps(_payload()).encode(), _bearer(b"wrong"), 401),
        (json.dumps(_payload()).encode(), {"X-Driftline-Signature": "sha256=00"}, 401),
        (b"{not json", _bearer(), 400),
        (json.dumps({**_payload(), "version": "3"}).encode(), _bearer(), 400),
        (json.dumps({**_payload(), "alerts": [{"status": "firing"}]}).encode(), _bearer(), 400),
        (json.dumps(_payload(model="")).encode(), _bearer(), 400),
        (json.dumps({**_payload(), "pad": "x" * 5000}).encode(), _bearer(), 413),
        # These dropped the connection, or (a lone surrogate) wrote Redis state and answered 503;
        # an integer past 4,300 digits, which also dropped it, is over this receiver's 4 KiB.
        (b"[" * 1000 + b"]" * 1000, _bearer(), 400),
        (json.dumps(_payload(deployment="\ud800")).encode(), _bearer(), 400),
    ],
    ids=[
        "no-credentials",
        "wrong-token",
        "wrong-hmac",
        "not-json",
        "version-3",
        "alert-missing-fields",
        "no-model-label",
        "oversized",
        "nested-too-deep",
        "lone-surrogate",
    ],
)
def test_refused_requests_change_nothing(
    receiver: Receiver, body: bytes, headers: dict[str, str], status: int
) -> None:
    before = receiver.state()
    answer_status, answer = receiver.post(body, headers)
    assert answer_status == status
    assert "error" in answer
    assert receiver.state() == before == (0, [], 0)
    assert receiver.ledger.webhook_refusals() == {status: 1}


def test_refusals_are_counted_on_the_evaluators_metrics(receiver: Receiver, tmp_path: Path) -> None:
    """A wrong token in Alertmanager's config shows as 401s, not as rollbacks that never come."""
    for token in (b"wrong", b"also-wrong"):
        receiver.post(json.dumps(_payload()).encode(), _bearer(token))
    receiver.post(b"{not json", _bearer())
    config_path = write_config(receiver.config, tmp_path)
    result = CliRunner().invoke(main, ["evaluate", "--once", "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    refused = {
        sample["labels"]["status"]: sample["value"]
        for sample in samples
        if sample["metric"] == "driftline_webhook_requests_refused_total"
    }
    assert refused == {"401": 2, "400": 1}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "HEAD"])
def test_other_methods_are_not_allowed(receiver: Receiver, method: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    try:
        connection.request(method, PATH, body=json.dumps(_payload()).encode(), headers=_bearer())
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert (response.status, response.getheader("Allow")) == (405, "GET, POST")
    assert body == b"" if method == "HEAD" else json.loads(body)["error"].startswith("method")
    assert receiver.state() == (0, [], 0)
    assert receiver.ledger.webhook_refusals() == {405: 1}


def test_firing_alert_acts_once_however_often_it_is_sent(receiver: Receiver) -> None:
    body = json.dumps(_payload()).encode()
    status, answer = receiver.post(body, _bearer())
    assert status == 200
    [result] = answer["results"]
    assert (result["outcome"], result["decision"], result["to_version"]) == (
        "handled",
        "executed",
        "v1",
    )
    assert result["incident"] == "canary-p99|shop|v2|1714557600123"
    for _ in range(3):  # Alertmanager re-sends (repeat_interval, group changes, retries)
        status, answer = receiver.post(body, {"X-Driftline-Signature": sign(HMAC_SECRET, body)})
        assert status == 200 and answer["results"][0]["outcome"] == "duplicate"
    [order] = receiver.actions.received("POST", "/order")
    sent = json.loads(order.body)
    assert (sent["model"], sent["from_version"], sent["to_version"], sent["rule"]) == (
        "shop",
        "v2",
        "v1",
        "canary-p99",
    )
    assert sent["value"] == 0.5 and sent["threshold"] == 0.2
    assert sent["runbook_url"] == "docs/runbooks/canary-p99.md"
    [entry] = receiver.ledger.audit_entries()
    assert entry["decision"] == "executed" and entry["source"] == "alertmanager"
    assert receiver.ledger.webhook_counts() == {"handled": 1, "duplicate": 3}
    assert receiver.ledger.webhook_refusals() == {}

    resolved = json.dumps(_payload("resolved")).encode()
    status, answer = receiver.post(resolved, _bearer())
    assert status == 200 and answer["results"][0]["outcome"] == "ignored_resolved"
    notify = json.dumps(_payload(action="notify")).encode()
    assert receiver.post(notify, _bearer())[1]["results"][0]["outcome"] == "ignored_not_rollback"
    unknown = json.dumps(_payload(alertname="SomethingElse")).encode()
    assert receiver.post(unknown, _bearer())[1]["results"][0]["outcome"] == ("ignored_unknown_rule")
    assert len(receiver.actions.requests) == 1 and len(receiver.ledger.audit_entries()) == 1


def test_one_alert_failing_keeps_neither_the_others_from_acting_nor_itself_from_retrying(
    receiver: Receiver,
) -> None:
    """One model's unreadable state answered 503 for the whole group, before the other alerts
    were even looked at: each retry failed the same way, and no alert of the group acted."""
    broken = receiver.ledger.keys.last_rollback("live", "shop")
    receiver.client.set(broken, "not a time")
    shop = _payload()
    other = _payload(model="other")["alerts"][0] | {"fingerprint": "1d5e4c3b2a1f0e99"}
    body = json.dumps({**shop, "alerts": [*shop["alerts"], other]}).encode()
    status, answer = receiver.post(body, _bearer())
    assert status == 503, answer
    assert [result["outcome"] for result in answer["results"]] == ["failed", "handled"]
    assert receiver.actions.received("POST", "/order") == []  # other has no version to go to
    receiver.client.delete(broken)
    status, answer = receiver.post(body, _bearer())  # Alertmanager's retry
    assert status == 200, answer
    assert [result["outcome"] for result in answer["results"]] == ["handled", "duplicate"]
    [order] = receiver.actions.received("POST", "/order")
    assert json.loads(order.body)["model"] == "shop"


def test_refuses_to_start_without_a_secret_unless_dev(
    stack_config: Callable[..., Config], redis_client: redis.Redis
) -> None:
    config = stack_config(partitions=1)
    ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
    executor = RollbackExecutor(config, ledger, [])
    with pytest.raises(ConfigError, match="needs a secret"):
        WebhookReceiver(config, ledger, executor, token=None, hmac_secret=None)
    dev = WebhookReceiver(config, ledger, executor, token=None, hmac_secret=None, dev=True)
    assert dev.authenticated({}, b"{}")
