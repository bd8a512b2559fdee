"""Transient Kafka errors are asked again; anything else, or a passed deadline, is raised."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.kafka_queries import ask_kafka, is_transient


def _failing_then(answer: int, errors: list[int]) -> tuple[list[int], Callable[[], int]]:
    calls: list[int] = []

    def question() -> int:
        calls.append(1)
        if len(calls) <= len(errors):
            raise KafkaException(KafkaError(errors[len(calls) - 1]))
        return answer

    return calls, question


def test_broker_handle_destroyed_mid_request_is_asked_again() -> None:
    # The error a watermark query met in CI while a killed broker rejoined its cluster.
    calls, question = _failing_then(
        7, [KafkaError._DESTROY_BROKER, KafkaError.NOT_LEADER_FOR_PARTITION]
    )
    assert ask_kafka(question, pause_s=0.001) == 7
    assert len(calls) == 3


def test_permanent_error_is_raised_at_once() -> None:
    calls, question = _failing_then(7, [KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        ask_kafka(question, pause_s=0.001)
    assert len(calls) == 1


def test_transient_error_past_the_deadline_is_raised() -> None:
    calls, question = _failing_then(7, [KafkaError._TRANSPORT] * 1000)
    with pytest.raises(KafkaException):
        ask_kafka(question, deadline_s=0.05, pause_s=0.01)
    assert 2 <= len(calls) < 1000


def test_only_kafka_errors_are_classified() -> None:
    assert is_transient(KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)))
    assert not is_transient(KafkaException(KafkaError(KafkaError.INVALID_CONFIG)))
    assert not is_transient(KafkaException("not a KafkaError"))
