"""What a production service calls to publish one inference event.

>>> # publisher = Publisher("kafka:9092")
>>> # publisher.publish(model="fraud", version="v42", event_id=request_id,
>>> #                   latency_ms=12.5, confidence=0.93, prediction="legit",
>>> #                   features={"amount": 120.0, "country": "DE"})
>>> # publisher.flush()

Sending is asynchronous: ``publish`` returns once the event is queued. The queue is bounded
(``max_queued``); when it is full, ``publish`` waits up to ``block_s`` for room and then raises
:class:`PublishQueueFull`, so a slow broker slows the service down visibly instead of eating its
memory. Delivery failures are counted in :attr:`Publisher.failed` and passed to ``on_error``. The
message key is the model name, so one model's events keep their order within a partition.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from driftline.events import Deployment, InferenceEvent, encode

__all__ = ["PublishQueueFull", "Publisher"]

log = logging.getLogger(__name__)


class PublishQueueFull(RuntimeError):
    """The bounded send queue stayed full for longer than ``block_s``."""


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "driftline.events",
        *,
        max_queued: int = 100_000,
        block_s: float = 1.0,
        on_error: Callable[[KafkaError], None] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.block_s = block_s
        self.on_error = on_error
        self.delivered = 0
        self.failed = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "queue.buffering.max.messages": max_queued,
                "linger.ms": 20,
                "compression.type": "lz4",
                "enable.idempotence": True,
                **(settings or {}),
            }
        )

    def publish(
        self,
        *,
        model: str,
        version: str,
        event_id: str | None = None,
        ts_ms: int | None = None,
        deployment: Deployment = "stable",
        latency_ms: float | None = None,
        confidence: float | None = None,
        prediction: str | float | bool | None = None,
        features: Mapping[str, float | str | bool | None] | None = None,
        segment: Mapping[str, str] | None = None,
        error: bool | str = False,
    ) -> str:
        """Queue one event; returns its ``event_id`` (generated when not given)."""
        event = InferenceEvent.build(
            event_id=event_id or uuid.uuid4().hex,
            ts=ts_ms if ts_ms is not None else time.time_ns() // 1_000_000,
            model=model,
            version=version,
            deployment=deployment,
            latency_ms=latency_ms,
            confidence=confidence,
            prediction=prediction,
            features=features,
            segment=dict(segment or {}),
            error=error,
        )
        self.publish_raw(encode(event), key=model.encode())
        return event.event_id

    def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Queue an already-encoded message (the caller vouches for its JSON)."""
        deadline = time.monotonic() + self.block_s
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=self._report)
                break
            except BufferError:
                if time.monotonic() >= deadline:
                    raise PublishQueueFull(
                        f"send queue full for {self.block_s}s; is the broker reachable?"
                    ) from None
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for queued events to be delivered; returns how many are still queued."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush for up to ``timeout_s``, then drop what is still queued (each drop is reported
        as a failed delivery) and stop; returns how many were dropped."""
        remaining = self.flush(timeout_s)
        if remaining:
            self._producer.purge()
            self._producer.flush(0)  # serves the purged messages' delivery reports
        return remaining

    def _report(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        log.warning("event delivery failed: %s", error)
        if self.on_error is not None:
            self.on_error(error)
