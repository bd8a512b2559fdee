"""Rollback decisions on real Redis, actions on real Kafka, Redis and a local HTTP server."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer

from alerting.alerting_step import rollback_request
from alerting.rollback_actions import (
    ActionFailed,
    ArgoRolloutsAbort,
    KafkaControlMessage,
    RollbackOrder,
    build_actions,
)
from alerting.rollback_executor import RollbackExecutor, RollbackRequest
from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from alerting.rule_engine import RuleEngine
from driftline.alerting_config import ArgoRolloutsActionConfig, KafkaControlActionConfig
from driftline.config import Config, parse_config
from tests.recording_server import Recorded, RecordingServer, recording_server
from tests.unit.test_rule_engine import _snapshot


def control_messages(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Every message on ``topic``; waits up to ``timeout_s`` for ``expect``, then a little
    longer to see any extra one."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    settle: float | None = None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            messages.append(json.loads(message.value()))
            if len(messages) >= expect and settle is None:
                settle = time.monotonic() + 1.0
    finally:
        consumer.close()
    return messages


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as recorder:
        yield recorder


def _config(
    stack_config: Callable[..., Config], server: RecordingServer, **rollback: Any
) -> Config:
    return stack_config(
        partitions=1,
        models={"shop": {"stable_version": "v1"}},
        rules=[
            {
                "name": "canary-p99",
                "metric": "driftline_latency_seconds",
                "match": {"quantile": "0.99", "deployment": "canary"},
                "comparison": ">",
                "threshold": 0.2,
                "for": "2s",
                "min_samples": 10,
                "action": "rollback",
            }
        ],
        alerting={
            "rollback": {
                "dry_run": False,
                "cooldown_seconds": 10,
                "backoff_seconds": 0.01,
                "actions": [
                    {"type": "webhook", "url": server.url + "/rollback"},
                    {"type": "kafka_control"},
                    {"type": "redis_key", "key": "active:{model}"},
                ],
                **rollback,
            }
        },
    )


def _executor(
    config: Config, client: redis.Redis, sleeps: list[float] | None = None
) -> tuple[RollbackExecutor, RedisRollbackLedger]:
    ledger = RedisRollbackLedger(client, AlertingKeys(config.redis.key_prefix))
    actions = build_actions(config.alerting.rollback.actions, config, client)
    sleep = (lambda seconds: sleeps.append(seconds)) if sleeps is not None else time.sleep
    return RollbackExecutor(config, ledger, actions, sleep=sleep), ledger


def test_flapping_metric_rolls_back_at_most_once_per_cooldown(
    stack_config: Callable[..., Config],
    redis_client: redis.Redis,
    kafka_bootstrap: str,
    server: RecordingServer,
) -> None:
    config = _config(stack_config, server)
    executor, ledger = _executor(config, redis_client)
    engine = RuleEngine(config.rules, config.alerting)
    start_ms = 1_700_000_000_000
    # p99 flaps around 0.2 s: 3 s above, 1 s below, for 30 s; `for` is 2 s, so every burst fires.
    fired_at = []
    for second in range(30):
        p99 = 0.1 if second % 4 == 3 else 0.5
        at_ms = start_ms + second * 1000
        for event in engine.evaluate(_snapshot(at_ms, [("v2", "canary", p99, 100)])):
            if event.state == "firing":
                fired_at.append(second)
                executor.handle(rollback_request(event), at_ms)
    executor.close()
    assert fired_at == [2, 6, 10, 14, 18, 22, 26]  # seven incidents
    decisions = [
        (int(e["at_ms"]) - start_ms) // 1000
        for e in ledger.audit_entries()
        if e["decision"] == "executed"
    ]
    assert decisions == [2, 14, 26]  # cooldown 10 s: 2, then the first incident at >= 12, ...
    declined = [e["decision"] for e in ledger.audit_entries() if e["decision"] != "executed"]
    assert declined == ["declined_cooldown"] * 4
    assert len(server.received("POST", "/rollback")) == 3
    messages = control_messages(kafka_bootstrap, config.topics.control, expect=3)
    assert [(m["model"], m["from_version"], m["to_version"]) for m in messages] == [
        ("shop", "v2", "v1")
    ] * 3
    assert redis_client.get("active:shop") == "v1"
    first = ledger.audit_entries()[0]
    assert first["rule"] == "canary-p99" and first["to_version"] == "v1"
    assert float(first["value"]) == 0.5 and float(first["threshold"]) == 0.2
    assert json.loads(first["actions"])[1]["ok"] is True
    assert ledger.decision_counts() == {
        ("shop", "canary-p99", "executed"): 3,
        ("shop", "canary-p99", "declined_cooldown"): 4,
    }


def _request(starts_at_ms: int, version: str = "v2") -> RollbackRequest:
    return RollbackRequest(
        rule="canary-p99",
        model="shop",
        version=version,
        starts_at_ms=starts_at_ms,
        value=0.5,
        threshold=0.2,
        source="test",
    )


def _order(incident: str) -> RollbackOrder:
    """The order of a canary of ``shop`` rolled back from v2 to v1."""
    return RollbackOrder(
        incident=incident,
        model="shop",
        from_version="v2",
        to_version="v1",
        rule="canary-p99",
        deployment="canary",
        segment="",
        value=0.5,
        threshold=0.2,
        runbook_url="",
        summary="",
        starts_at_ms=7,
        at_ms=8,
        source="test",
    )


def test_one_decision_per_incident_across_racing_processes(
    stack_config: Callable[..., Config],
    redis_client: redis.Redis,
    server: RecordingServer,
) -> None:
    config = _config(stack_config, server)
    executors = [_executor(config, redis_client)[0] for _ in range(8)]
    decisions: list[str] = []
    barrier = threading.Barrier(len(executors))

    def race(executor: RollbackExecutor) -> None:
        barrier.wait()
        decisions.append(executor.handle(_request(1_000)).decision)

    threads = [threading.Thread(target=race, args=(executor,)) for executor in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(decisions) == ["declined_duplicate"] * 7 + ["executed"]
    assert len(server.received("POST", "/rollback")) == 1
    for executor in executors:
        executor.close()


def _with_rollback(config: Config, **changes: Any) -> Config:
    rollback = config.alerting.rollback.model_copy(update=changes)
    alerting = config.alerting.model_copy(update={"rollback": rollback})
    return config.model_copy(update={"alerting": alerting})


def test_dry_run_daily_cap_no_target_and_retries(
    stack_config: Callable[..., Config],
    redis_client: redis.Redis,
) -> None:
    failures = {"left": 2}

    def flaky(request: Recorded) -> tuple[int, bytes]:
        if failures["left"]:
            failures["left"] -= 1
            return 503, b'{"error": "busy"}'
        return 200, b"{}"

    with recording_server(flaky) as server:
        config = _config(
            stack_config,
            server,
            cooldown_seconds=0,
            max_per_day=2,
            retries=3,
            backoff_seconds=0.5,
            backoff_max_seconds=0.75,
        )
        sleeps: list[float] = []
        executor, ledger = _executor(config, redis_client, sleeps)
        first = executor.handle(_request(1), now_ms=10_000)
        assert first.decision == "executed"
        assert first.actions[0] == {
            "action": "webhook",
            "ok": True,
            "attempts": 3,
            "detail": f"POST {server.url}/rollback: HTTP 200",
        }
        assert sleeps == [0.5, 0.75]  # exponential backoff, capped
        assert executor.handle(_request(2), now_ms=20_000).decision == "executed"
        capped = executor.handle(_request(3), now_ms=30_000)
        assert capped.decision == "declined_daily_cap"
        # a day after the first two, the cap has room again
        assert executor.handle(_request(4), now_ms=10_000 + 86_400_000).decision == "executed"
        assert len(server.received("POST")) == 3 + 1 + 1
        # A version with no stable_version and nothing healthy has no target.
        orphan = RollbackRequest(
            rule="r",
            model="orphan",
            version="v9",
            starts_at_ms=1,
            value=1,
            threshold=0,
            source="test",
        )
        assert executor.handle(orphan).decision == "declined_no_target"
        ledger.mark_healthy("orphan", {"v7", "v8"}, 5)
        ledger.mark_healthy("orphan", {"v8"}, 9)
        assert executor.target("orphan", "v9") == "v8"
        assert executor.target("orphan", "v8") == "v7"
        executor.close()

        before = len(server.requests)
        executor, ledger = _executor(_with_rollback(config, dry_run=True), redis_client)
        redis_client.delete("active:shop")
        decision = executor.handle(_request(5))
        assert decision.decision == "dry_run" and decision.to_version == "v1"
        assert [a["action"] for a in decision.actions] == ["webhook", "kafka_control", "redis_key"]
        assert decision.actions[2]["would"] == "SET active:shop v1"
        assert len(server.requests) == before
        assert redis_client.get("active:shop") is None
        executor.close()
        # dry runs keep their own books: a live decision of the same incident still goes
        live, _ = _executor(config, redis_client)
        assert live.handle(_request(5)).decision == "executed"
        live.close()


def test_argo_rollouts_abort_request_is_the_kubernetes_api_call(tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("k8s-token\n", encoding="utf-8")
    order_request = _request(7)
    with recording_server() as server:
        action = ArgoRolloutsAbort(
            ArgoRolloutsActionConfig(
                type="argo_rollouts",
                api_url=server.url,
                namespace="ml-prod",
                rollout="{model}-rollout",
                token_file=str(token_file),
                ca_file=None,
            )
        )
        order = _order(order_request.incident)
        assert action.run(order).endswith("HTTP 200")
        [request] = server.requests
        assert request.method == "PATCH"
        assert request.path == (
            "/apis/argoproj.io/v1alpha1/namespaces/ml-prod/rollouts/shop-rollout/status"
        )
        assert request.headers["Content-Type"] == "application/merge-patch+json"
        assert request.headers["Authorization"] == "Bearer k8s-token"
        assert json.loads(request.body) == {"status": {"abort": True}}
        assert request.body == b'{"status":{"abort":true}}'

    # Older CRDs without the status subresource: like the kubectl plugin, patch the Rollout.
    def no_status(request: Recorded) -> tuple[int, bytes]:
        return (404, b"{}") if request.path.endswith("/status") else (200, b"{}")

    with recording_server(no_status) as server:
        action = ArgoRolloutsAbort(
            ArgoRolloutsActionConfig(
                type="argo_rollouts",
                api_url=server.url,
                namespace="ml-prod",
                token_file=str(token_file),
                ca_file=None,
            )
        )
        action.run(order)
        assert [r.path for r in server.requests] == [
            "/apis/argoproj.io/v1alpha1/namespaces/ml-prod/rollouts/shop/status",
            "/apis/argoproj.io/v1alpha1/namespaces/ml-prod/rollouts/shop",
        ]


def test_an_executor_dying_between_actions_is_resumed_once(
    stack_config: Callable[..., Config], redis_client: redis.Redis, kafka_bootstrap: str
) -> None:
    """The first executor runs the webhook and dies before the control message; once its claim
    runs out, a second one sends only the control message; a third finds the incident done."""
    with recording_server() as server:
        config = _config(stack_config, server, backoff_max_seconds=0.0)
        now = [1_000_000]
        first, ledger = _executor(config, redis_client)
        first.clock_ms = lambda: now[0]

        class Dies(BaseException):  # like the process dying: nothing catches it
            pass

        control = first.actions[1]

        def die(order: object) -> str:
            raise Dies

        control.run = die  # type: ignore[method-assign]
        request = RollbackRequest(
            "canary-p99",
            "shop",
            "v2",
            starts_at_ms=999_000,
            value=0.5,
            threshold=0.2,
            source="engine",
        )
        with pytest.raises(Dies):
            first.handle(request, now_ms=now[0])
        assert len(server.received("POST", "/rollback")) == 1

        second, _ = _executor(config, redis_client)
        before_claim_ends = second.handle(
            dataclasses.replace(request, resubmitted=True), now_ms=now[0] + 1000
        )
        assert before_claim_ends.decision == "declined_duplicate"
        resumed = second.handle(
            dataclasses.replace(request, resubmitted=True), now_ms=now[0] + second.claim_ms + 1
        )
        assert resumed.decision == "executed" and "resumed" in resumed.reason
        assert [a["attempts"] for a in resumed.actions] == [0, 1, 1]
        assert len(server.received("POST", "/rollback")) == 1, "the webhook is not repeated"
        assert len(control_messages(kafka_bootstrap, config.topics.control, expect=1)) == 1
        third = second.handle(
            dataclasses.replace(request, resubmitted=True), now_ms=now[0] + 10 * second.claim_ms
        )
        assert third.decision == "declined_duplicate"
        executed = [e for e in ledger.audit_entries() if e["decision"] == "executed"]
        assert len(executed) == 1


def test_kafka_unavailable_is_retried_audited_and_never_run_twice(
    stack_config: Callable[..., Config], redis_client: redis.Redis
) -> None:
    with recording_server() as server:
        config = _config(stack_config, server, retries=2, backoff_seconds=0.01)
        broken = config.model_copy(
            update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})}
        )
        actions = build_actions(
            [
                action.model_copy(update={"timeout_seconds": 1.0})
                if action.type == "kafka_control"
                else action
                for action in broken.alerting.rollback.actions
            ],
            broken,
            redis_client,
        )
        ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
        executor = RollbackExecutor(broken, ledger, actions)
        request = RollbackRequest(
            "canary-p99",
            "shop",
            "v2",
            starts_at_ms=5_000,
            value=0.5,
            threshold=0.2,
            source="engine",
        )
        decision = executor.handle(request)
        assert decision.decision == "failed" and "kafka_control" in decision.reason
        by_action = {result["action"]: result for result in decision.actions}
        assert by_action["kafka_control"]["attempts"] == 3 and not by_action["kafka_control"]["ok"]
        assert by_action["webhook"]["ok"] and by_action["redis_key"]["ok"]
        again = executor.handle(dataclasses.replace(request, source="alertmanager"))
        assert again.decision == "declined_duplicate"
        assert len(server.received("POST", "/rollback")) == 1
        [audited] = [e for e in ledger.audit_entries() if e["decision"] == "failed"]
        assert audited["incident"] == decision.incident
        executor.close()


def test_an_undelivered_control_command_is_dropped_not_left_to_arrive_later() -> None:
    """A retry produces its own copy; the failed one, still queued when the broker came back,
    would be a second rollback command."""
    config = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1"}})
    action = KafkaControlMessage(
        KafkaControlActionConfig(type="kafka_control", timeout_seconds=0.5), config
    )
    for _ in range(2):
        with pytest.raises(ActionFailed, match=r"not delivered within 0\.5s"):
            action.run(_order("i-1"))
        # Private, because nothing public tells: the producer holds nothing for later.
        assert action._producer is not None and len(action._producer) == 0
    action.close()
    assert action._producer is None
