"""Evaluator failover: the active evaluator is SIGKILLed; a standby takes over within the lease
TTL and continues the same incident, so the rollback happens exactly once - neither repeated nor
lost - whether the kill lands while the alert is pending or after the rollback ran."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
from driftline.config import Config
from tests.conftest import start_consumer, write_config
from tests.e2e.test_builtin_path import _alert_states, _config, _evaluate
from tests.e2e.traffic import LiveTraffic, Stream, free_port, scrape, wait_for
from tests.integration.test_rollback_executor import control_messages
from tests.recording_server import recording_server

LEASE_TTL_S = 3.0


def _leader(port: int) -> float | None:
    try:
        return scrape(port).get(("driftline_evaluator_leader", ()))
    except OSError:
        return None


def _executed(client: redis.Redis, config: Config) -> bool:
    ledger = RedisRollbackLedger(client, AlertingKeys(config.redis.key_prefix))
    return any(entry["decision"] == "executed" for entry in ledger.audit_entries())


@pytest.mark.parametrize("kill_when", ["pending", "after_rollback"])
def test_standby_takes_over_without_duplicating_or_losing_the_rollback(
    kill_when: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    first_port, second_port = free_port(), free_port()
    with recording_server() as server:
        base = _config(stack_config, server, first_port)
        rule = base.rules[0].model_copy(update={"for_seconds": 4.0})
        # Short action timeouts and backoff: an unfinished rollback is resumed within seconds.
        rollback = base.alerting.rollback.model_copy(
            update={
                "backoff_max_seconds": 1.0,
                "actions": [
                    action.model_copy(update={"timeout_seconds": 2.0})
                    for action in base.alerting.rollback.actions
                ],
            }
        )
        config = base.model_copy(
            update={
                "rules": [rule],
                "alerting": base.alerting.model_copy(update={"rollback": rollback}),
                "evaluator": base.evaluator.model_copy(update={"lease_ttl_seconds": LEASE_TTL_S}),
            }
        )
        first_path = write_config(config, tmp_path)
        second_dir = tmp_path / "standby"
        second_dir.mkdir()
        second_path = write_config(
            config.model_copy(
                update={
                    "evaluator": config.evaluator.model_copy(update={"metrics_port": second_port})
                }
            ),
            second_dir,
        )
        canary = Stream("v2", "canary", rate_per_s=150)
        traffic = LiveTraffic(
            kafka_bootstrap,
            config.topics.events,
            "shop",
            [Stream("v1", "stable", rate_per_s=150), canary],
        ).start()
        consumer = start_consumer(first_path)
        try:
            with _evaluate(first_path) as active:
                wait_for(lambda: _leader(first_port) == 1, 40, "the first evaluator to lead")
                with _evaluate(second_path):
                    wait_for(lambda: _leader(second_port) == 0, 40, "the standby to serve")
                    wait_for(
                        lambda: _alert_states(first_port).get(("v2", "canary")) == "inactive",
                        40,
                        "the healthy canary to be evaluated",
                    )
                    canary.latency_median_ms = 200.0
                    if kill_when == "pending":
                        wait_for(
                            lambda: _alert_states(first_port).get(("v2", "canary")) == "pending",
                            40,
                            "the alert to be pending",
                        )
                    else:
                        wait_for(
                            lambda: server.received("POST", "/rollback"),
                            40,
                            "the first evaluator's rollback",
                        )
                    active.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    wait_for(lambda: _leader(second_port) == 1, 20, "the standby to take over")
                    takeover_s = time.monotonic() - killed
                    wait_for(
                        lambda: _alert_states(second_port).get(("v2", "canary")) == "firing",
                        40,
                        "the alert to fire on the new evaluator",
                    )
                    wait_for(lambda: server.received("POST", "/rollback"), 40, "the rollback")
                    wait_for(lambda: _executed(redis_client, config), 40, "the rollback's end")
                    time.sleep(4)  # several more ticks with the alert firing: nothing repeats
        finally:
            traffic.stop()
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)

    # Within the TTL, plus one tick of the standby's own schedule.
    assert takeover_s <= LEASE_TTL_S + config.evaluator.tick_seconds + 1.0, takeover_s
    [order] = server.received("POST", "/rollback")
    incident = json.loads(order.body)["incident"]
    [message] = control_messages(kafka_bootstrap, config.topics.control, expect=1)
    assert message["incident"] == incident
    ledger = RedisRollbackLedger(redis_client, AlertingKeys(config.redis.key_prefix))
    executed = [entry for entry in ledger.audit_entries() if entry["decision"] == "executed"]
    assert [entry["incident"] for entry in executed] == [incident]
