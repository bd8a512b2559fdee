"""The dead-letter topic: refused messages, unchanged, with why in their headers.

Each dead-lettered message keeps its original key and value and carries the headers
``driftline.reason`` (an :class:`~driftline.events.InvalidReason` value), ``driftline.detail``,
``driftline.source.topic``, ``driftline.source.partition`` and ``driftline.source.offset``, so a
team can inspect, fix and replay it. A value larger than ``max_value_bytes`` (an oversized event
would break the dead-letter topic's own size limit) is cut to that size and carries
``driftline.truncated_from``: the original stays in the source topic at the recorded offset.
A key larger than ``max_key_bytes`` is cut the same way (``driftline.key_truncated_from``): a key
near the broker's limit beside a cut value would still be too large to produce, and the
consumer would stop at that message on every restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["DeadLetterError", "DeadLetterPublisher", "dead_letter_headers"]

log = logging.getLogger(__name__)


class DeadLetterError(RuntimeError):
    """The dead-letter topic could not take a message; the batch must not be committed."""


def dead_letter_headers(
    reason: str, detail: str, topic: str | None, partition: int | None, offset: int | None
) -> list[tuple[str, str | bytes | None]]:
    return [
        ("driftline.reason", reason.encode()),
        ("driftline.detail", detail[:512].encode()),
        ("driftline.source.topic", str(topic).encode()),
        ("driftline.source.partition", str(partition).encode()),
        ("driftline.source.offset", str(offset).encode()),
    ]


class DeadLetterPublisher:
    """Produces refused messages and makes sure they are durable before the batch is committed."""

    def __init__(
        self,
        topic: str,
        producer_settings: Mapping[str, Any],
        max_value_bytes: int = 256 * 1024,
        max_key_bytes: int = 16 * 1024,
    ) -> None:
        self.topic = topic
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes
        self._producer = Producer({"enable.idempotence": True, "linger.ms": 5, **producer_settings})
        self._failures: list[str] = []

    def publish_record(
        self,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        key: str | bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
    ) -> None:
        """Produce a refused message to the dead-letter topic, its reason in the headers."""
        headers = dead_letter_headers(reason, detail, topic, partition, offset)
        if value is not None and len(value) > self.max_value_bytes:
            headers.append(("driftline.truncated_from", str(len(value)).encode()))
            value = value[: self.max_value_bytes]
        if key is not None:
            key = key.encode() if isinstance(key, str) else key
            if len(key) > self.max_key_bytes:
                headers.append(("driftline.key_truncated_from", str(len(key)).encode()))
                key = key[: self.max_key_bytes]
        self._producer.produce(
            self.topic,
            value=value,
            key=key,
            headers=headers,
            on_delivery=self._delivered,
        )
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every published message is acknowledged; raise if any was lost."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterError(
                f"{remaining} dead-letter message(s) unacknowledged, failures: {failures[:3]}"
            )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            log.error("dead-letter delivery failed: %s", error)
            self._failures.append(str(error))
