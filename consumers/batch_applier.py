"""Steps 2 to 4 of the checkpoint order, for one batch of raw messages, whatever the runtime.

A runtime fetches a batch (step 1), hands it to :meth:`BatchApplier.apply`, and commits the
batch's offsets (step 5) only after ``apply`` returned:

2. Decode and assemble (``consumers.batching``); refused messages not yet counted are produced to
   the dead-letter topic and **flushed**.
3. The refused messages' reasons, then each model's window update, are applied to the store, each
   atomically with its offsets (``consumers.window_writer``).
4. The resume hint (next offset per partition) is saved in the store.

A crash anywhere in between replays the batch, which the store's checkpoints make harmless: the
dead letters and window increments of a replay are recognised and not produced or counted twice.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis

from consumers.batching import BatchAssembler
from consumers.dead_letter import DeadLetterPublisher
from consumers.exceptions import StoreStateLost
from consumers.window_writer import RefusedAt, WindowWriter
from detectors.latency_sketch import LogBucketMapping
from detectors.window_store import WindowStore
from detectors.window_update import Binning, FeatureBinner
from driftline.config import Config

__all__ = [
    "STORE_RETRIES",
    "AppliedBatch",
    "BatchApplier",
    "EventBatchApplier",
    "RawBatch",
    "binning_from_config",
]

log = logging.getLogger(__name__)

STORE_RETRIES = 8
"""Attempts that may fail on a store outage before the next failure is raised."""


def binning_from_config(config: Config) -> Binning:
    monitoring = config.monitoring
    return Binning(
        latency=LogBucketMapping(monitoring.latency_relative_accuracy),
        confidence_bins=monitoring.confidence_bins,
        low_confidence_threshold=monitoring.low_confidence_threshold,
    )


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One batch from one topic, as parallel columns: each message's position, key and value."""

    topic: str
    partitions: Sequence[int]
    offsets: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    timestamps_ms: Sequence[int] | None = None
    """Each message's Kafka timestamp (-1: none), for appliers that set ``needs_timestamps``."""


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    events_applied: int
    next_offsets: dict[int, int]
    """Per partition, one past the batch's last offset: what the runtime may now commit."""


class BatchApplier(abc.ABC):
    """Steps 2 to 4 for one consumer process and one kind of message; owns the dead letters.

    :class:`EventBatchApplier` applies events; ``consumers.label_batch_applier`` labels.
    """

    needs_timestamps = False
    """Whether :meth:`apply` reads ``RawBatch.timestamps_ms`` (runtimes skip them otherwise)."""

    def __init__(self, config: Config, store: WindowStore) -> None:
        self.config = config
        self.store = store
        self.dead_letter = DeadLetterPublisher(
            config.topics.dead_letter,
            {
                "bootstrap.servers": config.kafka.bootstrap_servers,
                **config.kafka.client,
                **config.kafka.producer,
            },
        )

    @abc.abstractmethod
    def forget(self, partitions: Iterable[int]) -> None:
        """Call on every assignment change: cached checkpoints are reloaded from the store."""

    @abc.abstractmethod
    def apply(self, batch: RawBatch, now_ms: int) -> AppliedBatch:
        """Steps 2 to 4 for ``batch``; after it returns, its offsets may be committed."""

    def apply_retrying(self, batch: RawBatch, clock_ms: Callable[[], int]) -> AppliedBatch:
        """:meth:`apply`, waiting out a store outage; raises once :data:`STORE_RETRIES` failed.

        Re-applying a batch is safe (checkpoints), so each attempt simply starts over.
        """
        for attempt in range(STORE_RETRIES):
            try:
                return self.apply(batch, clock_ms())
            except (redis.ConnectionError, redis.TimeoutError) as error:
                delay_s = min(0.25 * 2**attempt, 10.0)
                log.warning("store unavailable (%s); retrying batch in %.2fs", error, delay_s)
                time.sleep(delay_s)
        return self.apply(batch, clock_ms())

    def _send_to_dead_letter(
        self, batch: RawBatch, refusals: Sequence[tuple[int, str, str]]
    ) -> None:
        """Produce each (message index, reason, detail) of ``batch``, then flush: the refusals
        must be durable on the dead-letter topic before the store records them as counted."""
        for index, reason, detail in refusals:
            self.dead_letter.publish_record(
                batch.topic,
                batch.partitions[index],
                batch.offsets[index],
                batch.keys[index],
                batch.values[index],
                reason,
                detail,
            )
        if refusals:
            self.dead_letter.flush()

    @staticmethod
    def _next_offsets(batch: RawBatch) -> dict[int, int]:
        """Per partition, one past the batch's last offset."""
        next_offsets: dict[int, int] = {}
        for partition, offset in zip(batch.partitions, batch.offsets, strict=True):
            if offset + 1 > next_offsets.get(partition, -1):
                next_offsets[partition] = offset + 1
        return next_offsets


class EventBatchApplier(BatchApplier):
    """Applies batches of inference events; owns the assembler and the window writer."""

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
    ) -> None:
        super().__init__(config, store)
        self.assembler = BatchAssembler(config, store, feature_binner_for)
        self.writer = WindowWriter(
            store,
            binning_from_config(config),
            feature_binner_for,
            config.drift.sequential_policy(),
        )
        self._saved_positions: set[str] = set()

    def forget(self, partitions: Iterable[int]) -> None:
        self.writer.forget(partitions)

    def apply(self, batch: RawBatch, now_ms: int) -> AppliedBatch:
        partitions, offsets = batch.partitions, batch.offsets
        assembled = self.assembler.assemble(partitions, offsets, batch.values, now_ms)
        self._check_store_kept_its_state(batch.topic)

        refused = [
            RefusedAt(partitions[item.index], offsets[item.index], item)
            for item in assembled.refused
        ]
        fresh = self.writer.unapplied_refused(refused)
        self._send_to_dead_letter(
            batch,
            [
                (item.refused.index, item.refused.invalid.reason, item.refused.invalid.detail)
                for item in fresh
            ],
        )
        self.writer.write_refused(fresh)

        applied = self.writer.write_all(list(assembled.models.values()), now_ms)

        next_offsets = self._next_offsets(batch)
        self.store.save_consumer_positions(self.config.kafka.group_id, batch.topic, next_offsets)
        self._saved_positions.add(batch.topic)
        return AppliedBatch(applied, next_offsets)

    def _check_store_kept_its_state(self, topic: str) -> None:
        """Raise :class:`StoreStateLost` when the resume hints this process saved are gone.

        Checked before anything of the batch is written: a model seen for the first time since
        the loss would otherwise be written onto the empty store, and its checkpoint would then
        refuse the replay that rebuilds it. (Checkpoints below the writer's own knowledge are
        caught in the scripts too; this catches the models the writer knew nothing about.)
        """
        if topic in self._saved_positions and not self.store.consumer_positions(
            self.config.kafka.group_id, topic
        ):
            self._saved_positions.discard(topic)
            raise StoreStateLost(f"the resume hints of {topic} vanished from the store")
