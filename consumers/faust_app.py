"""The faust-streaming runtime: driftline's events (or labels) agent in a Faust app.

Checkpoint order for every batch, the same as the confluent runtime's
(``consumers.kafka_consumer``); a crash between any two steps replays, never loses or
double-counts:

1. The agent takes a batch, ``stream.noack_take(batch_size, within=poll_timeout_seconds)``, of
   raw events (``value_serializer='raw'``) with their partitions and offsets; none is acked yet.
2. to 4. :meth:`consumers.batch_applier.EventBatchApplier.apply`: decode and assemble,
   dead-letter and **flush**, each model's window update atomically with its per-(model,
   partition) checkpoint, then the resume hint.
5. The batch's events are acked. Faust commits acked offsets on its own schedule
   (``broker_commit_interval``, on rebalance, on stop), so the commit stays the last step.

Steps 2 to 4 run on one dedicated thread, so the event loop keeps heartbeating and fetching the
next batch meanwhile. A batch that still fails once the store retries are spent crashes the app
(``CrashingSupervisor``), as the confluent runtime exits: going on would move the checkpoints
past the failed events, which a restart would then take for a replay. A batch that finds the
store lost its state (``StoreStateLost``: Redis restarted empty) is not acked either and crashes
the app the same way; :class:`FaustEventConsumer` then starts a fresh app whose first assignment
rewinds every partition one long window, as the confluent runtime seeks back in place. (Seeking a
running Faust app back is not safe: records fetched before the seek still reach the stream, and
Faust drops the replayed ones behind them as duplicates.)

On every rebalance, just before Faust seeks its partitions to their committed offsets
(``on_rebalance_complete``), each assigned partition gets the confluent runtime's resume rule:
the later of Kafka's committed offset and the store's resume hint; a commit without a hint means
the store lost its state, and the partition is rewound one long window (and one rollup bucket) by
timestamp to rebuild it. The rule takes effect by committing that offset, which Faust then seeks
to, the app still paused.

Labels take the same steps with the labels' batch code (``consumers.label_batch_applier``), in an
app whose id is the labels group (``labels=True``, :func:`mount_driftline_labels`).

Three ways in: :func:`create_app` builds a standalone app; :func:`mount_driftline` adds the agent
to a team's existing app; :class:`FaustEventConsumer` runs an app behind the confluent runtime's
``run``/``stop`` interface (``driftline consume --runtime faust``): ``stop()`` (SIGTERM) lets
the in-flight batch finish and be acked, commits, leaves the group and returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import faust
from aiokafka import codec  # type: ignore[import-untyped]  # aiokafka ships no py.typed
from confluent_kafka import Consumer, TopicPartition
from faust.streams import Stream
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, AgentT, EventT, StreamT
from mode import CrashingSupervisor

from consumers.batch_applier import BatchApplier, EventBatchApplier, RawBatch
from consumers.exceptions import StoreStateLost
from consumers.faust_settings import faust_app_settings
from consumers.kafka_queries import ask_kafka
from consumers.label_batch_applier import LabelBatchApplier, labels_runtime_config
from detectors.window_store import WindowStore
from detectors.window_update import FeatureBinner
from driftline.config import Config, ConfigError

__all__ = [
    "CompressionUnsupported",
    "DriftlineAgent",
    "FaustEventConsumer",
    "check_app_id",
    "create_app",
    "mount_driftline",
    "mount_driftline_labels",
]

log = logging.getLogger(__name__)

AGENT_NAME = "driftline.events"
LABELS_AGENT_NAME = "driftline.labels"


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _timestamp_ms(message: Any) -> int:
    # Faust's message timestamps are float seconds; 0 or None when the record had none.
    return round(message.timestamp * 1000) if message.timestamp else -1


class CompressionUnsupported(RuntimeError):
    """aiokafka cannot read compressed batches here; driftline's publisher compresses (lz4)."""


def require_compression_codecs() -> None:
    """Fail at start-up, not at the first compressed batch (which would crash the worker)."""
    if not (codec.has_lz4() and codec.has_zstd() and codec.has_snappy()):
        raise CompressionUnsupported(
            "the faust runtime reads Kafka through aiokafka, which decompresses lz4, zstd and "
            "snappy batches only with cramjam installed (driftline's publisher sends lz4): "
            "pip install 'aiokafka[lz4,snappy,zstd]'"
        )


class DriftlineAgent:
    """The events (or labels) agent: one per process and kind, mounted on one Faust app.

    Counters (``events_applied``, ``batches``) are updated after each batch is acked; every store
    and Kafka call of the agent runs on its own thread, one at a time.
    """

    def __init__(
        self,
        config: Config,
        store: WindowStore | None = None,
        *,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        rebuild: bool = False,
        labels: bool = False,
    ) -> None:
        """``rebuild``: the store lost its state; rewind the first assignment one long window.

        ``labels``: consume the labels topic (in the labels group, ``<kafka.group_id>-labels``,
        which must then be the app's id) instead of the events topic.
        """
        require_compression_codecs()
        if store is None:
            from driftline.cli import open_store

            store = cast(WindowStore, open_store(config))
        self.config = labels_runtime_config(config) if labels else config
        self.store = store
        self.topic = self.config.topics.events
        self.name = LABELS_AGENT_NAME if labels else AGENT_NAME
        self.clock_ms = clock_ms
        self.applier: BatchApplier = (
            LabelBatchApplier(config, store)
            if labels
            else EventBatchApplier(config, store, feature_binner_for)
        )
        self.events_applied = 0
        self.batches = 0
        self.last_batch_monotonic_s = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-faust")
        self._offsets_reader: Consumer | None = None
        self._owned: set[int] = set()
        self._rebuild = rebuild
        self._app: faust.App | None = None

    def mount(self, app: faust.App) -> AgentT[bytes]:
        """Register the agent (and its rebalance and shutdown hooks) on ``app``; once only."""
        if self._app is not None:
            raise RuntimeError("a DriftlineAgent is mounted on one app only")
        check_app_id(app, self.config)
        self._app = app
        topic = app.topic(
            self.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,  # an empty value is refused and dead-lettered, not skipped
        )
        # mode's SignalHandlerT accepts no handler at all under mypy (its NamedArg names the
        # signal type as a string), hence the ignores.
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_before_shutdown)  # type: ignore[arg-type]

        async def driftline_events(stream: StreamT[bytes]) -> None:
            await self.consume(stream)

        return app.agent(topic, name=self.name, supervisor_strategy=CrashingSupervisor)(
            driftline_events
        )

    async def consume(self, stream: StreamT[bytes]) -> None:
        """The agent's body: steps 1 to 5 for every batch, until the stream stops."""
        settings = self.config.consumer
        loop = asyncio.get_running_loop()
        # StreamT does not declare noack_take; every stream Faust hands an agent is a Stream.
        taken = cast(Stream[bytes], stream).noack_take(
            settings.batch_size, within=settings.poll_timeout_seconds
        )
        async for items in taken:
            # noack_take hands over the events themselves (its annotation says values), so that
            # they can be acked after the batch is safe rather than when it is taken.
            events = cast(Sequence[EventT[bytes]], items)
            messages = [event.message for event in events]
            batch = RawBatch(
                self.topic,
                [message.partition for message in messages],
                [message.offset for message in messages],
                [message.key for message in messages],
                [message.value for message in messages],
                [_timestamp_ms(message) for message in messages]
                if self.applier.needs_timestamps
                else None,
            )
            try:
                applied = await loop.run_in_executor(
                    self._executor, self.applier.apply_retrying, batch, self.clock_ms
                )
            except StoreStateLost as lost:
                log.error("%s: rebuilding the windows from a fresh app", lost)
                raise  # unacked; CrashingSupervisor stops the app
            for event in events:
                await stream.ack(event)
            self.events_applied += applied.events_applied
            self.batches += 1
            self.last_batch_monotonic_s = time.monotonic()

    def _rebuild_offsets(self, reader: Consumer, partitions: list[int]) -> dict[int, int]:
        """First offset of each partition whose events the long window (and its oldest rollup
        bucket) may hold; partitions with no message that recent are left out."""
        layout = self.store.layout
        since_ms = self.clock_ms() - layout.long_ms - layout.rollup_ms
        lookups = [TopicPartition(self.topic, p, since_ms) for p in partitions]
        found = ask_kafka(lambda: reader.offsets_for_times(lookups, timeout=30))
        return {answer.partition: answer.offset for answer in found if answer.offset >= 0}

    def close(self) -> None:
        """Flush the dead letters and release the clients (after the app stopped consuming)."""
        self._executor.shutdown(wait=True)
        try:
            self.applier.dead_letter.flush()
        finally:
            if self._offsets_reader is not None:
                self._offsets_reader.close()
                self._offsets_reader = None

    async def _on_before_shutdown(self, app: Any, *args: Any, **kwargs: Any) -> None:
        # Sent once the app's consumer stopped and its streams acked what they had taken.
        log.info("stopping after %d batches, %d events applied", self.batches, self.events_applied)
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def _on_rebalance_complete(self, app: Any, *args: Any, **kwargs: Any) -> None:
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == self.topic}
        loop = asyncio.get_running_loop()
        try:
            resume = await loop.run_in_executor(self._executor, self._resume_offsets, assigned)
            if resume:
                # Faust's own commit only covers acked events; this is the driver's commit, the
                # one Faust uses underneath, and Faust seeks to the result right after. Except
                # to offset 0, which aiokafka's seek_to_committed skips: hence the seek too.
                consumer = cast(FaustConsumer, app.consumer)
                await consumer._commit({TP(self.topic, p): o for p, o in resume.items()})
                for partition, offset in resume.items():
                    await consumer.seek(TP(self.topic, partition), offset)
        except Exception:
            # Faust then resumes from the committed offsets: a replay, which checkpoints absorb.
            log.exception("resume offsets not applied for %s", sorted(assigned))
        log.info("assigned partitions %s of %s", sorted(assigned), self.topic)

    def _resume_offsets(self, assigned: set[int]) -> dict[int, int]:
        """Offsets to move the group to before Faust seeks: the confluent runtime's rule."""
        self.applier.forget(self._owned | assigned)
        self._owned = set(assigned)
        if not assigned:
            return {}
        reader = self._reader()
        partitions = [TopicPartition(self.topic, p) for p in sorted(assigned)]
        committed = ask_kafka(lambda: reader.committed(partitions, timeout=30))
        hints = self.store.consumer_positions(self.config.kafka.group_id, self.topic)
        resume: dict[int, int] = {}
        rebuild: list[tuple[int, int]] = []
        rebuild_all, self._rebuild = self._rebuild, False
        for stored in committed:
            kafka_offset = stored.offset if stored.offset >= 0 else None
            hint = hints.get(stored.partition)
            if rebuild_all:
                rebuild.append((stored.partition, max(stored.offset, 0)))
            elif hint is not None:
                if hint > (kafka_offset or 0):
                    resume[stored.partition] = hint
            elif kafka_offset is not None:
                rebuild.append((stored.partition, kafka_offset))
        if rebuild:
            found = self._rebuild_offsets(reader, [partition for partition, _ in rebuild])
            for partition, kafka_offset in rebuild:
                # Nothing that recent: from the commit, so no unacked batch is skipped.
                resume[partition] = found.get(partition, kafka_offset)
                log.warning(
                    "partition %d: the store lost its state; rebuilding from offset %d (one "
                    "long window back)",
                    partition,
                    resume[partition],
                )
        return resume

    def _reader(self) -> Consumer:
        # Reads the group's committed offsets without joining it, like the lag reader.
        if self._offsets_reader is None:
            self._offsets_reader = Consumer(
                {
                    "bootstrap.servers": self.config.kafka.bootstrap_servers,
                    "group.id": self.config.kafka.group_id,
                    "enable.auto.commit": False,
                    **self.config.kafka.client,
                }
            )
        return self._offsets_reader


def check_app_id(app: faust.App, config: Config) -> None:
    """The app's id is its consumer group; it must be the group driftline reads lag and hints of."""
    group = config.kafka.group_id
    if app.conf.id != group:
        # Offsets are committed under the app id; lag and resume hints are read under
        # kafka.group_id. Two names for one group would make both silently wrong.
        raise ConfigError(
            f"kafka.group_id = {group!r}: must equal the Faust app id {app.conf.id!r} "
            "(the app's consumer group), or lag and resume hints would name another group"
        )


def mount_driftline(
    app: faust.App,
    config: Config,
    *,
    store: WindowStore | None = None,
    feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
) -> AgentT[bytes]:
    """Add driftline's events agent to an existing Faust app; returns the Faust agent.

    The app's id must be ``config.kafka.group_id``. ``store`` defaults to the Redis store of
    ``config``. The app's own settings stay in force: give it ``consumer_auto_offset_reset =
    'earliest'`` and keep ``stream_wait_empty`` on (the default) for a graceful stop to commit.
    """
    check_app_id(app, config)  # before a store or producer is opened for nothing
    agent = DriftlineAgent(config, store, feature_binner_for=feature_binner_for)
    return agent.mount(app)


def mount_driftline_labels(
    app: faust.App, config: Config, *, store: WindowStore | None = None
) -> AgentT[bytes]:
    """Add driftline's labels agent to a Faust app whose id is ``<kafka.group_id>-labels``.

    Labels are consumed in a group of their own (as by ``driftline consume-labels``), so they
    need an app of their own: a Faust app is one consumer group.
    """
    check_app_id(app, labels_runtime_config(config))
    agent = DriftlineAgent(config, store, labels=True)
    return agent.mount(app)


def create_app(
    config: Config,
    *,
    store: WindowStore | None = None,
    feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
    **settings: Any,
) -> faust.App:
    """A Faust app whose id is ``config.kafka.group_id``, with driftline's agent mounted.

    ``settings`` override :func:`consumers.faust_settings.faust_app_settings` (e.g. enable the
    web server). Run it as any Faust app: ``faust.Worker(app).execute_from_commandline()``.
    """
    app = faust.App(config.kafka.group_id, **{**faust_app_settings(config), **settings})
    mount_driftline(app, config, store=store, feature_binner_for=feature_binner_for)
    return app


class FaustEventConsumer:
    """The Faust runtime behind the confluent runtime's interface: :meth:`run` until :meth:`stop`.

    :meth:`run` builds a fresh app in its own event loop, so the object works from any thread, and
    the process's signal handling stays the caller's (``driftline consume``). When the store
    loses its state, the app is replaced by one that rebuilds (see the module docstring).
    """

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        *,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        labels: bool = False,
    ) -> None:
        """``labels``: consume the labels topic, as ``driftline consume-labels`` does."""
        self.config = config
        self.store = store
        self.feature_binner_for = feature_binner_for
        self.clock_ms = clock_ms
        self.labels = labels
        # The app's id is the consumer group: the labels group for the labels agent.
        self.app_config = labels_runtime_config(config) if labels else config
        # A bad kafka setting fails here, named.
        self.settings = faust_app_settings(self.app_config)
        self.agent = self._agent(rebuild=False)
        self._earlier_events_applied = 0
        self._earlier_batches = 0
        self._stopping = threading.Event()

    @property
    def events_applied(self) -> int:
        return self._earlier_events_applied + self.agent.events_applied

    @property
    def batches(self) -> int:
        return self._earlier_batches + self.agent.batches

    def stop(self) -> None:
        """Ask the app to finish its current batch, commit, and return (signal-safe)."""
        self._stopping.set()

    def run(self, *, max_idle_s: float | None = None) -> None:
        """Consume until stopped (or, with ``max_idle_s``, until no batch came for that long).

        A crash of the app (a batch that could not be applied) is raised once it has stopped.
        """
        asyncio.run(self._run(max_idle_s))

    def _agent(self, *, rebuild: bool) -> DriftlineAgent:
        return DriftlineAgent(
            self.config,
            self.store,
            feature_binner_for=self.feature_binner_for,
            clock_ms=self.clock_ms,
            rebuild=rebuild,
            labels=self.labels,
        )

    async def _run(self, max_idle_s: float | None) -> None:
        while True:
            crash = await self._run_app(max_idle_s)
            if not isinstance(crash, StoreStateLost) or self._stopping.is_set():
                break
            self._earlier_events_applied += self.agent.events_applied
            self._earlier_batches += self.agent.batches
            self.agent = self._agent(rebuild=True)
        if crash is not None:
            raise crash

    async def _run_app(self, max_idle_s: float | None) -> BaseException | None:
        app = faust.App(self.app_config.kafka.group_id, **self.settings)
        self.agent.mount(app)
        await app.start()
        self.agent.last_batch_monotonic_s = time.monotonic()
        try:
            while not (self._stopping.is_set() or app.crashed):
                idle_s = time.monotonic() - self.agent.last_batch_monotonic_s
                if max_idle_s is not None and idle_s > max_idle_s:
                    break
                await asyncio.sleep(0.05)
        finally:
            await app.stop()
        return app.crash_reason
