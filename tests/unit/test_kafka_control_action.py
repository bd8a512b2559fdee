"""The control-topic rollback action against a broker that never answers."""

from __future__ import annotations

import pytest

from alerting.rollback_actions import ActionFailed, KafkaControlMessage, RollbackOrder
from driftline.alerting_config import KafkaControlActionConfig
from driftline.config import parse_config


def test_an_undelivered_command_is_dropped_not_left_to_arrive_later() -> None:
    """A retry produces its own copy; the failed one, still queued when the broker came back,
    would be a second rollback command."""
    config = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1"}})
    action = KafkaControlMessage(
        KafkaControlActionConfig(type="kafka_control", timeout_seconds=0.5), config
    )
    order = RollbackOrder(
        incident="i-1",
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
        starts_at_ms=1,
        at_ms=2,
        source="engine",
    )
    for _ in range(2):
        with pytest.raises(ActionFailed, match=r"not delivered within 0\.5s"):
            action.run(order)
        # Private, because nothing public tells: the producer holds nothing for later.
        assert action._producer is not None and len(action._producer) == 0
    action.close()
    assert action._producer is None
