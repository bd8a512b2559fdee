"""Questions to Kafka (committed offsets, offsets by time, watermarks) that survive a restart.

While a broker restarts, librdkafka answers some requests with errors that only mean "ask again":
a partition's leader is moving, the group coordinator is loading, or the connection a request was
waiting on was torn down (``_DESTROY_BROKER``, ``_TRANSPORT``). A consumer that let these escape
from its assignment callback would die in the middle of a rebalance, so they are retried until a
deadline; anything else is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

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
