"""The labels runtime: a confluent-kafka consumer of the labels topic, in a group of its own.

It is the events runtime (``consumers.kafka_consumer.EventConsumer``: subscription, the resume
rule on assignment, commits, SIGTERM) with another batch step, in the consumer group
``<kafka.group_id>-labels`` so that labels and events are consumed independently. Checkpoint order
for every batch (a crash between any two steps replays, never loses or double-counts):

1. ``consume(num_messages=batch_size)`` from the labels topic.
2. Decode and join (``consumers.label_batching``): one round trip looks up the predictions on
   record, one reads the duplicate markers. Undecodable labels not yet counted are produced to the
   dead-letter topic and **flushed**.
3. Labels counted under no model are counted by reason; then each model's labels are applied
   atomically with their per-(model, partition) checkpoints in the ``labels`` space and their
   duplicate markers (``consumers.label_writer``), all models in one round trip.
4. The resume hint (next offset per partition) is saved under the labels group.
5. Kafka offsets are committed: the last step.

A replay recomputes each label's join. Should a prediction's record appear or expire between a
crash and the replay of its label (a labels consumer far ahead of the events consumer, or down for
longer than the horizon), that label may be counted under a different outcome; within the horizon
and with the events consumer ahead, as in normal running, a replay counts exactly what the first
attempt did.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from consumers.kafka_consumer import EventConsumer, without_errors
from consumers.label_batching import LabelAssembler
from consumers.label_writer import LabelWriter, RefusedLabelAt
from detectors.window_store import WindowStore
from driftline.config import Config

__all__ = ["LabelConsumer", "labels_group", "labels_runtime_config"]

log = logging.getLogger(__name__)


def labels_group(config: Config) -> str:
    """The consumer group of the labels runtime."""
    return f"{config.kafka.group_id}-labels"


def labels_runtime_config(config: Config) -> Config:
    """``config`` as the events runtime must see it to consume labels: their topic and group."""
    return config.model_copy(
        update={
            "kafka": config.kafka.model_copy(update={"group_id": labels_group(config)}),
            "topics": config.topics.model_copy(update={"events": config.topics.labels}),
        }
    )


class LabelConsumer(EventConsumer):
    """Consumes the labels topic into the windows until :meth:`stop` is called."""

    def __init__(self, config: Config, store: WindowStore, **options: Any) -> None:
        super().__init__(labels_runtime_config(config), store, **options)
        self.label_assembler = LabelAssembler(config, store)
        self.label_writer = LabelWriter(config, store)
        self.labels_applied = 0
        self.labels_refused = 0

    def _process(self, messages: list[Any]) -> None:
        now_ms = self.clock_ms()
        good = without_errors(messages)
        if not good:
            return
        partitions = [m.partition() for m in good]
        offsets = [m.offset() for m in good]
        message_ms = []
        for message in good:
            kind, stamp = message.timestamp()
            message_ms.append(stamp if kind != TIMESTAMP_NOT_AVAILABLE else -1)
        assembled = self.label_assembler.assemble(
            partitions, offsets, message_ms, [m.value() for m in good], now_ms
        )

        refused = [
            RefusedLabelAt(partitions[item.index], offsets[item.index], item)
            for item in assembled.refused
        ]
        fresh = self.label_writer.unapplied_refused(refused)
        dead = [item for item in fresh if item.refused.dead_letter]
        for item in dead:
            self.dead_letter.publish(
                good[item.refused.index], item.refused.reason, item.refused.detail
            )
        if dead:
            self.dead_letter.flush()
        self.label_writer.write_refused(fresh)
        self.labels_refused += len(fresh)

        self.labels_applied += self.label_writer.write_all(assembled.models.values(), now_ms)

        next_offsets: dict[int, int] = {}
        for partition, offset in zip(partitions, offsets, strict=True):
            if offset + 1 > next_offsets.get(partition, -1):
                next_offsets[partition] = offset + 1
        self.store.save_consumer_positions(self.config.kafka.group_id, self.topic, next_offsets)
        self._commit(next_offsets, asynchronous=True)
        self._applied_next_offsets.update(next_offsets)
        self.batches += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.label_writer.forget(tp.partition for tp in partitions)
        super()._on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.label_writer.forget(tp.partition for tp in partitions)
        super()._on_revoke(consumer, partitions)
