"""The labels runtime: a confluent-kafka consumer of the labels topic, in a group of its own.

It is the events runtime (``consumers.kafka_consumer.EventConsumer``: subscription, the resume
rule on assignment, commits, SIGTERM) with the labels' batch steps
(``consumers.label_batch_applier``, which the Faust runtime runs too), in the consumer group
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

from typing import Any

from consumers.kafka_consumer import EventConsumer
from consumers.label_batch_applier import LabelBatchApplier, labels_group, labels_runtime_config
from detectors.window_store import WindowStore
from driftline.config import Config

__all__ = ["LabelConsumer", "labels_group", "labels_runtime_config"]


class LabelConsumer(EventConsumer):
    """Consumes the labels topic into the windows until :meth:`stop` is called."""

    def __init__(self, config: Config, store: WindowStore, **options: Any) -> None:
        self.label_applier = LabelBatchApplier(config, store)
        super().__init__(
            labels_runtime_config(config), store, applier=self.label_applier, **options
        )

    @property
    def labels_applied(self) -> int:
        return self.label_applier.labels_applied

    @property
    def labels_refused(self) -> int:
        return self.label_applier.labels_refused
