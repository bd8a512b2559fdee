"""Requests to Kafka (committed offsets, offsets by time, watermarks, topic creation) that
survive a broker restart and a client's first moments.

librdkafka answers some requests with errors that only mean "ask again": a partition's leader is
moving, the group coordinator is loading, or the connection a request was waiting on was torn
down (``_DESTROY_BROKER``, ``_TRANSPORT``). The last happens while a broker restarts, and also on
a fresh client: librdkafka (2.10 on) drops its bootstrap connections once metadata names the
brokers, failing what was in flight on them. A consumer that let these escape from its
assignment callback would die in the middle of a rebalance, so they are retried until a
deadline; anything else is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERROR_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError._DESTROY_BROKER,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def is_transient(error: KafkaException) -> bool:
    """Whether asking again later may succeed."""
    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, KafkaError):
        return False
    return kafka_error.retriable() or kafka_error.code() in TRANSIENT_ERROR_CODES


def ask_kafka(question: Callable[[], T], *, deadline_s: float = 60.0, pause_s: float = 0.5) -> T:
    """``question()``, asked again after transient errors until ``deadline_s`` has passed."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return question()
        except KafkaException as error:
            if not is_transient(error) or time.monotonic() + pause_s > deadline:
                raise
            log.info("kafka busy (%s); asking again", error)
            time.sleep(pause_s)


def create_topics(admin: AdminClient, topics: list[NewTopic], *, deadline_s: float = 60.0) -> None:
    """Create ``topics``; one already there counts as created (a retried request may have won)."""
    for topic in topics:

        def create(topic: NewTopic = topic) -> None:
            try:
                admin.create_topics([topic])[topic.topic].result(timeout=30)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

        ask_kafka(create, deadline_s=deadline_s)
