"""The window store: one interface, two backends (``stores/redis_store``, ``stores/memory_store``).

Lifecycle and guarantees every backend keeps:

1. :meth:`WindowStore.apply` writes one :class:`WindowUpdate` atomically: the bucket and rollup
   increments, the lifetime totals, the newest event time, and the last applied offset of every
   partition the update covers. It first checks those offsets: if any partition's checkpoint is
   already at or past the update's first offset, nothing is written and the checkpoints are
   returned (:class:`Conflict`); the caller drops the events at or below them and retries. This is
   what makes a replayed batch (crash, rebalance, a zombie consumer) count once. The update's
   join records are written first (before its checkpoint can move); its label markers are
   checked with the checkpoints: if one is already set, nothing is written (:class:`Conflict`
   with ``labelled``), so a duplicate label counts once even across consumers. If a checkpoint
   is *below* the offset the writer knows was applied, the store lost its state: nothing is
   written and :class:`StateLost` is returned, so the caller rebuilds by replaying. The update's
   sequential states are written only if each partition's stored state still covers the offset
   the writer built on (else :class:`Conflict`, and the writer reloads them), and its sequential
   alarms extend each feature's :class:`AlarmEpisode`.
2. Only after ``apply`` returns :class:`Applied` may the consumer commit the Kafka offsets it
   covers: the commit is the last step, so a crash between the two replays, never loses.
3. :meth:`WindowStore.read_windows` sums the buckets of each requested window into one flat field
   map per window; buckets expire by themselves after the retention of their level.

The Redis backend holds every key of one model under the hash tag ``{model}``, so one script
touches one Redis Cluster slot.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from detectors.sequential_detector import SequentialAlarm
from detectors.window_update import WindowLayout, WindowUpdate

__all__ = [
    "SHADOW_INDEX_LIMIT",
    "AlarmEpisode",
    "Applied",
    "ApplyResult",
    "BucketRun",
    "Conflict",
    "KeySchema",
    "StateLost",
    "WindowStore",
    "bucket_runs",
]

SHADOW_INDEX_LIMIT = 100_000
"""Shadow event ids a store keeps indexed per model (the newest; older ones also leave the index
once out of the long window). About 100 bytes each in Redis: 10 MB per shadowed model."""


@dataclass(frozen=True)
class Applied:
    """The update was written, with its checkpoints."""


@dataclass(frozen=True)
class Conflict:
    """Nothing was written: some of the update's offsets were applied before.

    ``checkpoints`` maps each partition of the update to its last applied offset (-1 for none).
    ``labelled`` holds the update's markers that were already set (duplicate labels, counted by
    another batch); the caller counts those labels as duplicates and retries.
    """

    checkpoints: Mapping[int, int]
    labelled: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StateLost:
    """Nothing was written: a checkpoint is below what the writer knew was applied.

    Only lost data moves a checkpoint backwards (Redis restarted empty, a flush): the caller must
    rebuild the windows by replaying, not add increments on top of the hole.
    """

    checkpoints: Mapping[int, int]


ApplyResult = Applied | Conflict | StateLost


@dataclass(frozen=True)
class AlarmEpisode:
    """The sequential alarms of one feature of one series since the first one that came more
    than the hold after the one before: the first's event time, statistic and threshold, the
    last one's event time, how many alarms and how many episodes ever, and ``shift_sd``, the net
    shift the episode's alarms moved the running mean by (``None`` for an episode stored before
    driftline recorded it).

    A false alarm is nearly always followed by the alarm that corrects it, so its episode nets
    0, and a lasting shift's nets its size to the nearest 0.25 sd."""

    start_ms: int
    last_ms: int
    count: int
    statistic: float
    threshold: float
    shift_sd: float | None
    episodes: int

    def apply(self, alarm: SequentialAlarm, hold_ms: int) -> AlarmEpisode:
        """This episode after ``alarm`` (the stores' rule; the Redis script mirrors it)."""
        if alarm.first_ms - self.last_ms > hold_ms:
            return AlarmEpisode.first(alarm, self.count, self.episodes)
        return replace(
            self,
            last_ms=max(self.last_ms, alarm.last_ms),
            count=self.count + alarm.count,
            shift_sd=None if self.shift_sd is None else self.shift_sd + alarm.shift_sd,
        )

    @classmethod
    def first(cls, alarm: SequentialAlarm, count: int = 0, episodes: int = 0) -> AlarmEpisode:
        """The episode ``alarm`` starts, after ``count`` alarms in ``episodes`` episodes."""
        return cls(
            alarm.first_ms,
            alarm.last_ms,
            count + alarm.count,
            alarm.statistic,
            alarm.threshold,
            alarm.shift_sd,
            episodes + 1,
        )


@dataclass(frozen=True)
class BucketRun:
    """The windows read from one bucket width, and how to read each bucket once.

    ``starts`` are the buckets of the longest of them, newest first. Windows of one width end at
    the same newest bucket, so each is the sum of the first ``count`` of these: ``windows`` holds
    ``(count, position in the request)`` per window, shortest first. Summing ``starts`` in order
    and keeping a copy of the running sum at each count reads and adds every bucket once (the
    drift fast window costs no read the short window does not already make).
    """

    width_ms: int
    starts: list[int]
    windows: list[tuple[int, int]]


def bucket_runs(layout: WindowLayout, windows_ms: Sequence[int], now_ms: int) -> list[BucketRun]:
    """The :class:`BucketRun` of each bucket width the windows ``windows_ms`` read."""
    by_width: dict[int, list[tuple[int, int]]] = {}
    for position, window_ms in enumerate(windows_ms):
        count = len(layout.bucket_starts(window_ms, now_ms))
        by_width.setdefault(layout.width_for(window_ms), []).append((count, position))
    runs = []
    for width_ms, windows in by_width.items():
        windows.sort()
        longest_ms = max(windows_ms[position] for _, position in windows)
        runs.append(BucketRun(width_ms, layout.bucket_starts(longest_ms, now_ms), windows))
    return runs


@dataclass(frozen=True)
class KeySchema:
    """Names of every key driftline writes. All of one model's keys share the tag ``{model}``."""

    prefix: str = "dl"

    def bucket(self, model: str, width_ms: int, start_ms: int) -> str:
        return f"{self.prefix}:{{{model}}}:bucket:{width_ms}:{start_ms}"

    def checkpoints(self, model: str, space: str = "") -> str:
        """Last applied offset per partition; ``space`` names another topic's offsets (labels)."""
        suffix = f":{space}" if space else ""
        return f"{self.prefix}:{{{model}}}:checkpoints{suffix}"

    def labelled(self, model: str, event_id: str) -> str:
        """Marker of an event whose label was counted (duplicates count once)."""
        return f"{self.prefix}:{{{model}}}:labelled:{event_id}"

    def prediction(self, event_id: str) -> str:
        """A prediction on record for the label join; no hash tag: labels may carry only the id."""
        return f"{self.prefix}:prediction:{event_id}"

    def shadow_prediction(self, event_id: str) -> str:
        """A shadow prediction on record: the shadow leg of ``prediction(event_id)``."""
        return f"{self.prefix}:shadow-prediction:{event_id}"

    def shadow_events(self, model: str) -> str:
        """Sorted set of the model's recent shadow event ids, scored by event time."""
        return f"{self.prefix}:{{{model}}}:shadow-events"

    def quality_reference(self, model: str) -> str:
        """The model's quality reference (``detectors.quality_reference``), JSON."""
        return f"{self.prefix}:{{{model}}}:quality-reference"

    def totals(self, model: str) -> str:
        return f"{self.prefix}:{{{model}}}:totals"

    def meta(self, model: str) -> str:
        return f"{self.prefix}:{{{model}}}:meta"

    def admitted(self, model: str, dimension: str) -> str:
        return f"{self.prefix}:{{{model}}}:admitted:{dimension}"

    def sequential_states(self, model: str) -> str:
        """Hash of the sequential state per partition: ``state:<p>`` JSON, ``offset:<p>``."""
        return f"{self.prefix}:{{{model}}}:sequential"

    def sequential_alarms(self, model: str) -> str:
        """Hash of the alarm episodes: ``<part>|<series key>|<feature>``, part one of
        ``start``, ``last``, ``count``, ``statistic``, ``threshold``, ``shift``, ``episodes``."""
        return f"{self.prefix}:{{{model}}}:sequential-alarms"

    def reference(self, model: str) -> str:
        """The model's drift reference: a hash of ``id`` and ``json`` (``detectors.reference``)."""
        return f"{self.prefix}:{{{model}}}:reference"

    def models(self) -> str:
        return f"{self.prefix}:{{registry}}:models"

    def consumer_positions(self, group: str, topic: str) -> str:
        return f"{self.prefix}:{{consumer:{group}}}:positions:{topic}"


class WindowStore(abc.ABC):
    """Where windows live. Implementations must be safe to share by one thread."""

    layout: WindowLayout

    @abc.abstractmethod
    def apply(self, update: WindowUpdate) -> ApplyResult:
        """Write ``update`` atomically with its offsets, or refuse it as a :class:`Conflict`."""

    def apply_many(self, updates: Sequence[WindowUpdate]) -> list[ApplyResult]:
        """:meth:`apply` each update, in order; a backend may send them in one round trip."""
        return [self.apply(update) for update in updates]

    @abc.abstractmethod
    def checkpoints(self, model: str, partitions: Iterable[int], space: str = "") -> dict[int, int]:
        """Last applied offset per partition for ``model`` (-1 where nothing was applied), in the
        checkpoint ``space`` of :attr:`WindowUpdate.checkpoint_space`."""

    @abc.abstractmethod
    def sequential_states(self, model: str, partitions: Iterable[int]) -> dict[int, str | None]:
        """The stored sequential state (JSON) of each partition of ``model``, ``None`` if none."""

    @abc.abstractmethod
    def sequential_alarms(self, model: str) -> dict[str, AlarmEpisode]:
        """Every alarm episode of ``model``, by ``<series key>|<feature>``."""

    @abc.abstractmethod
    def prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        """The join record of each event (``detectors.prediction_record``), ``None`` if absent."""

    @abc.abstractmethod
    def shadow_prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        """The shadow leg's record of each event (``WindowUpdate.shadow_records``), if any."""

    @abc.abstractmethod
    def shadow_event_ids(self, model: str, from_ms: int, to_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` shadow event ids of ``model`` stamped in ``[from_ms, to_ms)``, newest
        first."""

    @abc.abstractmethod
    def labelled(self, model: str, event_ids: Sequence[str]) -> list[bool]:
        """Whether a label of each event was already counted (its marker is set)."""

    @abc.abstractmethod
    def quality_reference(self, model: str) -> str | None:
        """The model's quality reference document, if one was saved."""

    @abc.abstractmethod
    def save_quality_reference(self, model: str, document: str) -> None:
        """Replace the model's quality reference document."""

    @abc.abstractmethod
    def admit(self, model: str, dimension: str, values: Sequence[str], cap: int) -> list[bool]:
        """Admit values of a bounded dimension (versions, segment values, models).

        The first ``cap`` distinct values ever seen are admitted, across all processes; a value
        once admitted stays admitted. Returns, per value, whether it is admitted.
        """

    @abc.abstractmethod
    def admit_models(self, values: Sequence[str], cap: int) -> list[bool]:
        """Admit model names into the registry, with the semantics of :meth:`admit`."""

    @abc.abstractmethod
    def models(self) -> list[str]:
        """Every admitted model, sorted."""

    @abc.abstractmethod
    def read_windows(
        self, model: str, windows_ms: Sequence[int], now_ms: int
    ) -> list[dict[str, int]]:
        """For each window length, the field-wise sum of its buckets ending at ``now_ms``."""

    @abc.abstractmethod
    def read_bucket_fields(
        self, model: str, window_ms: int, now_ms: int, fields: Sequence[str]
    ) -> list[tuple[int, list[int]]]:
        """``(bucket start ms, value of each of fields)`` per bucket of the window, newest first.

        The buckets of :meth:`read_windows`, one by one and only the fields asked for: where in
        the window a series has events (the rollout gate's observation time), at the cost of a
        few integers per bucket.
        """

    @abc.abstractmethod
    def totals(self, model: str) -> dict[str, int]:
        """Lifetime counters of ``model`` (exactly once, like the windows)."""

    @abc.abstractmethod
    def newest_event_ms(self, model: str) -> int | None:
        """Event time of the newest event applied for ``model``, if any."""

    @abc.abstractmethod
    def consumer_positions(self, group: str, topic: str) -> dict[int, int]:
        """Next offset per partition that the group has fully applied (a resume hint)."""

    @abc.abstractmethod
    def save_consumer_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Record resume hints; called after every model of the batch was applied."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release connections."""
