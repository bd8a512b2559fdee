"""The publisher: events arrive keyed by model; delivery errors are reported, not swallowed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from driftline.config import Config
from driftline.events import InferenceEvent, decode_event, decode_features
from driftline.publisher import Publisher, PublishQueueFull
from tests.conftest import read_topic


def test_published_events_decode_as_sent(
    stack_config: Callable[..., Config], kafka_bootstrap: str
) -> None:
    config = stack_config(partitions=2)
    publisher = Publisher(kafka_bootstrap, config.topics.events)
    ids = [
        publisher.publish(
            model="fraud",
            version="v42",
            deployment="canary",
            latency_ms=12.5,
            confidence=0.93,
            prediction="legit",
            segment={"region": "eu"},
            features={"amount": 120.0, "country": "DE", "age": None},
        )
        for _ in range(20)
    ]
    assert publisher.flush(30) == 0
    assert publisher.delivered == 20 and publisher.failed == 0
    messages = read_topic(kafka_bootstrap, config.topics.events, 20)
    assert len(messages) == 20
    assert {m.key() for m in messages} == {b"fraud"}
    decoded = [decode_event(m.value()) for m in messages]
    assert all(isinstance(event, InferenceEvent) for event in decoded)
    assert sorted(event.event_id for event in decoded) == sorted(ids)  # type: ignore[union-attr]
    first = decoded[0]
    assert isinstance(first, InferenceEvent)
    assert first.deployment == "canary" and first.segment == {"region": "eu"}
    assert decode_features(first.features) == {"amount": 120.0, "country": "DE", "age": None}


def test_delivery_errors_are_reported() -> None:
    errors: list[KafkaError] = []
    # Nothing listens on port 1: every message times out and is reported.
    publisher = Publisher(
        "127.0.0.1:1",
        on_error=errors.append,
        settings={"message.timeout.ms": 500, "enable.idempotence": False},
    )
    publisher.publish(model="fraud", version="v1", latency_ms=1.0)
    publisher.flush(5)
    assert publisher.failed == 1 and publisher.delivered == 0
    assert errors and errors[0].code() == KafkaError._MSG_TIMED_OUT


def test_bounded_queue_refuses_instead_of_growing() -> None:
    publisher = Publisher(
        "127.0.0.1:1",
        max_queued=10,
        block_s=0.2,
        settings={"message.timeout.ms": 60_000, "enable.idempotence": False},
    )
    for _ in range(10):
        publisher.publish(model="fraud", version="v1")
    with pytest.raises(PublishQueueFull):
        publisher.publish(model="fraud", version="v1")
    assert publisher.close(0) == 10
    assert publisher.failed == 10 and publisher.delivered == 0
