"""Consumer lag, read from Kafka: the group's committed offsets against the high watermarks."""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["ConsumerLagReader"]

log = logging.getLogger(__name__)


class ConsumerLagReader:
    """Reads lag of ``group`` on ``topics`` without joining the group (no subscribe)."""

    def __init__(self, bootstrap_servers: str, group: str, topics: list[str], **client: object):
        self.group = group
        self.topics = topics
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,
                "enable.auto.commit": False,
                **client,
            }
        )

    def read(self, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
        """Lag per (topic, partition); partitions never committed count from the low watermark."""
        lags: dict[tuple[str, int], int] = {}
        try:
            metadata = self._consumer.list_topics(timeout=timeout_s)
            partitions = [
                TopicPartition(topic, partition)
                for topic in self.topics
                if topic in metadata.topics and metadata.topics[topic].error is None
                for partition in metadata.topics[topic].partitions
            ]
            if not partitions:
                return lags
            committed = self._consumer.committed(partitions, timeout=timeout_s)
            for stored in committed:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(stored.topic, stored.partition), timeout=timeout_s
                )
                start = stored.offset if stored.offset >= 0 else low
                lags[(stored.topic, stored.partition)] = max(0, high - start)
        except KafkaException as error:
            log.warning("consumer lag unavailable: %s", error)
        return lags

    def close(self) -> None:
        self._consumer.close()
