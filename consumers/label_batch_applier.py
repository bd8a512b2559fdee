"""Steps 2 to 4 of the checkpoint order for one batch of label messages, whatever the runtime.

The labels' counterpart of ``consumers.batch_applier`` (same steps, same guarantees), run by the
confluent runtime (``consumers.label_consumer``) and the Faust one (``consumers.faust_app``):

2. Decode the labels and join them with their predictions (``consumers.label_batching``);
   refused labels not yet counted that belong on the dead-letter topic are produced and
   **flushed**.
3. The refusals, then each model's label update, are applied to the store, each atomically with
   its offsets (``consumers.label_writer``).
4. The resume hint is saved under the labels' consumer group.
"""

from __future__ import annotations

from collections.abc import Iterable

from consumers.batch_applier import AppliedBatch, BatchApplier, RawBatch
from consumers.label_batching import LabelAssembler
from consumers.label_writer import LabelWriter, RefusedLabelAt
from detectors.window_store import WindowStore
from driftline.config import Config

__all__ = ["LabelBatchApplier", "labels_group", "labels_runtime_config"]


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


class LabelBatchApplier(BatchApplier):
    """Applies batches of labels for one consumer process (``config`` is the user's config)."""

    needs_timestamps = True  # a label without its own time is dated by its Kafka timestamp

    def __init__(self, config: Config, store: WindowStore) -> None:
        super().__init__(labels_runtime_config(config), store)
        self.label_assembler = LabelAssembler(config, store)
        self.label_writer = LabelWriter(config, store)
        self.labels_applied = 0
        self.labels_refused = 0

    def forget(self, partitions: Iterable[int]) -> None:
        self.label_writer.forget(partitions)

    def apply(self, batch: RawBatch, now_ms: int) -> AppliedBatch:
        partitions, offsets = batch.partitions, batch.offsets
        message_ms = batch.timestamps_ms or [-1] * len(offsets)
        assembled = self.label_assembler.assemble(
            partitions, offsets, message_ms, batch.values, now_ms
        )

        refused = [
            RefusedLabelAt(partitions[item.index], offsets[item.index], item)
            for item in assembled.refused
        ]
        fresh = self.label_writer.unapplied_refused(refused)
        self._send_to_dead_letter(
            batch,
            [
                (item.refused.index, item.refused.reason, item.refused.detail)
                for item in fresh
                if item.refused.dead_letter
            ],
        )
        self.label_writer.write_refused(fresh)
        self.labels_refused += len(fresh)

        applied = self.label_writer.write_all(assembled.models.values(), now_ms)
        self.labels_applied += applied

        next_offsets = self._next_offsets(batch)
        self.store.save_consumer_positions(self.config.kafka.group_id, batch.topic, next_offsets)
        return AppliedBatch(applied, next_offsets)
