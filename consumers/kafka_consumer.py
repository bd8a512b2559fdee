"""The default runtime: a confluent-kafka batch consumer in a consumer group.

Checkpoint order for every batch (a crash between any two steps replays, never loses or
double-counts):

1. ``consume(num_messages=batch_size)``: one crossing of the Python/C boundary per batch.
2. Decode and assemble (``consumers.batching``); refused messages not yet counted are produced to
   the dead-letter topic and **flushed**.
3. The refused messages' reasons, then each model's window update, are applied to the store, each
   atomically with its offsets (``consumers.window_writer``).
4. The resume hint (next offset per partition) is saved in the store.
5. Kafka offsets are committed: the last step, after the state they cover is safe.

Steps 2 to 4 are ``consumers.batch_applier``, which the Faust runtime (``consumers.faust_app``)
runs too, so the two runtimes cannot disagree about what a batch does to the windows.

Auto-commit is off. On assignment (cooperative-sticky, so ``incremental_assign``) each partition
resumes from the later of Kafka's committed offset and the store's resume hint (a hint ahead of
the commit is committed too, since the state covers it); if Kafka has a commit but the store has
no hint, the store lost its state, and the partition seeks back one long window by timestamp to
rebuild it; a hint past the partition's end (the topic was recreated) stops the consumer with
``StorePositionsPastTheEnd`` before anything is applied. SIGTERM (``stop()``) finishes the batch,
commits synchronously and leaves the group.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from consumers.batch_applier import (
    BatchApplier,
    EventBatchApplier,
    RawBatch,
    binning_from_config,
)
from consumers.exceptions import StorePositionsPastTheEnd, StoreStateLost
from consumers.kafka_queries import ask_kafka
from detectors.window_store import WindowStore
from detectors.window_update import FeatureBinner
from driftline.config import Config

__all__ = ["EventConsumer", "binning_from_config", "consumer_settings"]

log = logging.getLogger(__name__)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def consumer_settings(config: Config) -> dict[str, Any]:
    return {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "group.id": config.kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": False,
        **config.kafka.client,
        **config.kafka.consumer,
    }


def _timestamp_ms(message: Any) -> int:
    kind, stamp = message.timestamp()
    return int(stamp) if kind != TIMESTAMP_NOT_AVAILABLE else -1


def without_errors(messages: list[Any]) -> list[Any]:
    """The messages that carry data; errors other than end-of-partition are logged."""
    good = []
    for message in messages:
        error = message.error()
        if error is None:
            good.append(message)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.error("consume error: %s", error)
    return good


class EventConsumer:
    """Consumes the events topic into the window store until :meth:`stop` is called."""

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        *,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        applier: BatchApplier | None = None,
    ) -> None:
        """``applier``: steps 2 to 4 for another kind of message (labels); events by default."""
        self.config = config
        self.store = store
        self.topic = config.topics.events
        self.clock_ms = clock_ms
        # Steps 2 to 4, shared with the Faust runtime (consumers.faust_app).
        self.applier = applier or EventBatchApplier(config, store, feature_binner_for)
        self.dead_letter = self.applier.dead_letter
        self._consumer = Consumer({**consumer_settings(config), "on_commit": self._on_commit})
        self._stopping = threading.Event()
        self._closing = False
        self._applied_next_offsets: dict[int, int] = {}
        # Found in a rebalance callback, raised by the loop: librdkafka mangles callback errors.
        self._past_the_end: StorePositionsPastTheEnd | None = None
        # What the broker acknowledged: an async commit lost in a rebalance is sent again.
        self._confirmed_next_offsets: dict[int, int] = {}
        self._last_recommit = 0.0
        self.events_applied = 0
        self.batches = 0

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit, and return (signal-safe)."""
        self._stopping.set()

    def run(self, *, max_idle_s: float | None = None) -> None:
        """Consume until stopped (or, with ``max_idle_s``, until no message came for that long)."""
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        settings = self.config.consumer
        idle_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                messages = self._consumer.consume(
                    settings.batch_size, timeout=settings.poll_timeout_seconds
                )
                if self._past_the_end is not None:
                    raise self._past_the_end
                if not messages:
                    self._recommit_unconfirmed()
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                idle_since = time.monotonic()
                self._process_with_retries(messages)
        finally:
            self._close()

    def _process_with_retries(self, messages: list[Any]) -> None:
        # Re-applying a batch is safe (checkpoints), so a Redis outage is waited out, not fatal.
        try:
            for attempt in range(8):
                try:
                    self._process(messages)
                    return
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    delay = min(0.25 * 2**attempt, 10.0)
                    log.warning("store unavailable (%s); retrying batch in %.2fs", error, delay)
                    time.sleep(delay)
            self._process(messages)
        except StoreStateLost as lost:
            log.error("%s: rebuilding the windows", lost)
            self._rebuild_after_store_loss()

    def _rebuild_after_store_loss(self) -> None:
        """Seek every owned partition back one long window and replay; commit nothing meanwhile.

        The batch that found the loss is dropped unapplied; the replay re-applies it with
        everything else the long window needs, since the store's checkpoints are gone.
        """
        assignment = self._consumer.assignment()
        self.applier.forget(tp.partition for tp in assignment)
        self._applied_next_offsets.clear()
        since_ms = self.clock_ms() - self.store.layout.long_ms - self.store.layout.rollup_ms
        lookups = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in assignment]
        found = ask_kafka(lambda: self._consumer.offsets_for_times(lookups, timeout=30))
        committed = ask_kafka(lambda: self._consumer.committed(assignment, timeout=30))
        for answer, stored in zip(found, committed, strict=True):
            # Nothing that recent (-1): replay from the last commit, so this batch is not lost.
            offset = answer.offset if answer.offset >= 0 else max(stored.offset, 0)
            self._consumer.seek(TopicPartition(answer.topic, answer.partition, offset))
            log.warning("partition %d: replaying from offset %d", answer.partition, offset)

    def _process(self, messages: list[Any]) -> None:
        now_ms = self.clock_ms()
        good = without_errors(messages)
        if not good:
            return
        batch = RawBatch(
            self.topic,
            [m.partition() for m in good],
            [m.offset() for m in good],
            [m.key() for m in good],
            [m.value() for m in good],
            [_timestamp_ms(m) for m in good] if self.applier.needs_timestamps else None,
        )
        applied = self.applier.apply(batch, now_ms)
        self.events_applied += applied.events_applied
        self._commit(applied.next_offsets, asynchronous=True)
        self._applied_next_offsets.update(applied.next_offsets)
        self.batches += 1

    def _commit(self, next_offsets: Mapping[int, int], *, asynchronous: bool) -> None:
        if not next_offsets:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in next_offsets.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            # A failed commit only means a replay later, which the checkpoints make harmless.
            log.warning("offset commit failed: %s", error)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.info("offset commit not acknowledged (%s); it is sent again when idle", error)
            return
        for tp in partitions:
            if tp.error is None and tp.topic == self.topic:
                self._confirmed_next_offsets[tp.partition] = tp.offset

    def _recommit_unconfirmed(self) -> None:
        """While idle, commit again applied offsets the broker never acknowledged (at most once
        a second): otherwise a commit lost in a rebalance would wait for the next message."""
        if time.monotonic() - self._last_recommit < 1.0:
            return
        unconfirmed = {
            partition: offset
            for partition, offset in self._applied_next_offsets.items()
            if self._confirmed_next_offsets.get(partition) != offset
        }
        if unconfirmed:
            self._last_recommit = time.monotonic()
            self._commit(unconfirmed, asynchronous=True)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing or not partitions:
            # Nothing to resume: a cooperative rebalance's empty assignment, or one finishing
            # inside close(), where nothing will be consumed any more and a committed-offsets
            # request cannot be answered (it waits out its whole timeout).
            closing = " while closing" if self._closing else ""
            log.info("assigned %s%s", [tp.partition for tp in partitions], closing)
            consumer.incremental_assign(partitions)
            return
        self.applier.forget(tp.partition for tp in partitions)
        hints = self.store.consumer_positions(self.config.kafka.group_id, self.topic)
        committed = ask_kafka(lambda: consumer.committed(partitions, timeout=30))
        rebuild = []
        for assigned, stored in zip(partitions, committed, strict=True):
            kafka_offset = stored.offset if stored.offset >= 0 else None
            hint = hints.get(assigned.partition)
            if hint is not None:
                assigned.offset = max(hint, kafka_offset or 0)
                if hint > (kafka_offset or 0):
                    # The previous owner applied these but died before committing: commit them
                    # now (when idle), or with no new messages the group's lag never clears.
                    self._applied_next_offsets[assigned.partition] = hint
            elif kafka_offset is not None:
                rebuild.append((assigned, kafka_offset))
            else:
                assigned.offset = OFFSET_INVALID  # auto.offset.reset decides
        self._check_positions_within_the_log(consumer, partitions, hints)
        if rebuild:
            self._seek_back_one_long_window(consumer, rebuild)
        log.info("assigned %s", [(tp.partition, tp.offset) for tp in partitions])
        consumer.incremental_assign(partitions)

    def _check_positions_within_the_log(
        self, consumer: Consumer, partitions: list[TopicPartition], hints: dict[int, int]
    ) -> None:
        """Note a store position past its partition's end, for the loop to stop on."""
        for assigned in partitions:
            hint = hints.get(assigned.partition)
            if hint is None:
                continue
            ask = functools.partial(consumer.get_watermark_offsets, assigned, timeout=30)
            _, end = ask_kafka(ask)
            if hint > end:
                self._applied_next_offsets.pop(assigned.partition, None)  # never commit it
                self._past_the_end = StorePositionsPastTheEnd(
                    f"{self.topic} partition {assigned.partition}: the store has applied it up to"
                    f" offset {hint}, but it ends at {end}: was the topic recreated, or is this"
                    " another Kafka cluster? Every new event below that offset would count as"
                    " already applied, so nothing is consumed. If the topic was recreated, delete"
                    " its positions and checkpoints from the store (docs/operations.md,"
                    " 'A recreated topic') and restart."
                )
                return

    def _seek_back_one_long_window(
        self, consumer: Consumer, rebuild: list[tuple[TopicPartition, int]]
    ) -> None:
        since_ms = self.clock_ms() - self.store.layout.long_ms
        lookups = [TopicPartition(self.topic, tp.partition, since_ms) for tp, _ in rebuild]
        found = ask_kafka(lambda: consumer.offsets_for_times(lookups, timeout=30))
        for (assigned, kafka_offset), answer in zip(rebuild, found, strict=True):
            assigned.offset = answer.offset if answer.offset >= 0 else kafka_offset
            log.warning(
                "partition %d: no checkpoint in the store; rebuilding from offset %d (one long "
                "window back)",
                assigned.partition,
                assigned.offset,
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.applier.forget(tp.partition for tp in partitions)
        for tp in partitions:
            self._applied_next_offsets.pop(tp.partition, None)
            self._confirmed_next_offsets.pop(tp.partition, None)
        log.info("revoked %s", [tp.partition for tp in partitions])

    def _close(self) -> None:
        try:
            # Only offsets whose batches were applied: after a failed batch, never its own.
            owned = {tp.partition for tp in self._consumer.assignment()}
            applied = self._applied_next_offsets
            self._commit({p: o for p, o in applied.items() if p in owned}, asynchronous=False)
        finally:
            self._closing = True
            self._consumer.close()
            self.dead_letter.flush()
