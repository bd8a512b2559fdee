"""The in-memory window store: the same semantics as Redis, in one process, for ``backtest``.

Time is whatever the ``clock`` says: wall-clock time for tests that compare it with Redis, event
time for a backtest replaying last month's traffic. A bucket whose expiry is at or before the
clock's time is gone, as an expired Redis key is.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from detectors.window_store import (
    SHADOW_INDEX_LIMIT,
    AlarmEpisode,
    Applied,
    ApplyResult,
    Conflict,
    StateLost,
    WindowStore,
    bucket_runs,
)
from detectors.window_update import WindowLayout, WindowUpdate

__all__ = ["MemoryWindowStore"]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryWindowStore(WindowStore):
    def __init__(self, layout: WindowLayout, clock: Callable[[], int] = _wall_clock_ms) -> None:
        self.layout = layout
        self.clock = clock
        # (model, width_ms, start_ms) -> fields; expiry kept beside it.
        self._buckets: dict[tuple[str, int, int], dict[str, int]] = {}
        self._expire_at_ms: dict[tuple[str, int, int], int] = {}
        self._checkpoints: dict[str, dict[int, int]] = defaultdict(dict)
        self._totals: dict[str, dict[str, int]] = defaultdict(dict)
        self._newest_event_ms: dict[str, int] = {}
        self._admitted: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._positions: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        # Label join state: records by event id, markers by (model, event id); value = expire-at.
        self._records: dict[str, tuple[bytes, int]] = {}
        self._markers: dict[tuple[str, str], int] = {}
        self._shadow_records: dict[str, tuple[bytes, int]] = {}
        self._shadow_index: dict[str, dict[str, int]] = defaultdict(dict)
        self._quality_references: dict[str, str] = {}
        # model -> partition -> (offset covered, state JSON); model -> field -> episode.
        self._sequential: dict[str, dict[int, tuple[int, str]]] = defaultdict(dict)
        self._episodes: dict[str, dict[str, AlarmEpisode]] = defaultdict(dict)
        self._purge_at_size = 100_000

    def apply(self, update: WindowUpdate) -> ApplyResult:
        now_ms = self.clock()
        for event_id, record, expire_at_ms in update.join_records:
            self._records[event_id] = (record, expire_at_ms)
        if update.shadow_records:
            index = self._shadow_index[update.model]
            for event_id, record, expire_at_ms, ts_ms in update.shadow_records:
                self._shadow_records[event_id] = (record, expire_at_ms)
                index[event_id] = ts_ms
            oldest_kept_ms = max(index.values()) - self.layout.long_ms - self.layout.rollup_ms
            kept = {event_id: ts for event_id, ts in index.items() if ts >= oldest_kept_ms}
            if len(kept) > SHADOW_INDEX_LIMIT:
                newest = sorted(kept.items(), key=lambda item: item[1], reverse=True)
                kept = dict(newest[:SHADOW_INDEX_LIMIT])
            self._shadow_index[update.model] = kept
        checkpoints = self._checkpoints[_space_key(update.model, update.checkpoint_space)]
        current = {span.partition: checkpoints.get(span.partition, -1) for span in update.ranges}
        if any(current[span.partition] < span.known_applied_offset for span in update.ranges):
            return StateLost(current)
        if any(current[span.partition] >= span.first_offset for span in update.ranges):
            return Conflict(current)
        marked = frozenset(
            event_id
            for event_id, _ in update.markers
            if self._markers.get((update.model, event_id), 0) > now_ms
        )
        if marked:
            return Conflict(current, labelled=marked)
        states = self._sequential[update.model]
        if any(
            states.get(write.partition, (-1, ""))[0] != write.expected_offset
            for write in update.sequential_writes
        ):
            return Conflict(current)
        for write in update.sequential_writes:
            states[write.partition] = (write.offset, write.state)
        episodes = self._episodes[update.model]
        for alarm in update.sequential_alarms:
            known = episodes.get(alarm.field)
            episodes[alarm.field] = (
                AlarmEpisode.first(alarm)
                if known is None
                else known.apply(alarm, update.sequential_hold_ms)
            )
        for event_id, expire_at_ms in update.markers:
            self._markers[(update.model, event_id)] = expire_at_ms
        for span in update.ranges:
            checkpoints[span.partition] = span.last_offset
        layout = self.layout
        for start_ms, fields in update.buckets.items():
            rollup_start_ms = start_ms - start_ms % layout.rollup_ms
            for width, start in ((layout.bucket_ms, start_ms), (layout.rollup_ms, rollup_start_ms)):
                key = (update.model, width, start)
                bucket = self._buckets.setdefault(key, {})
                for name, increment in fields.items():
                    bucket[name] = bucket.get(name, 0) + increment
                self._expire_at_ms[key] = start + layout.retention_ms(width)
        totals = self._totals[update.model]
        for name, increment in update.totals.items():
            totals[name] = totals.get(name, 0) + increment
        if update.newest_event_ms > self._newest_event_ms.get(update.model, 0):
            self._newest_event_ms[update.model] = update.newest_event_ms
        self._expire(self.clock())
        return Applied()

    def sequential_states(self, model: str, partitions: Iterable[int]) -> dict[int, str | None]:
        states = self._sequential.get(model, {})
        return {p: states[p][1] if p in states else None for p in partitions}

    def sequential_alarms(self, model: str) -> dict[str, AlarmEpisode]:
        return dict(self._episodes.get(model, {}))

    def _expire(self, now_ms: int) -> None:
        expired = [key for key, at in self._expire_at_ms.items() if at <= now_ms]
        for key in expired:
            del self._expire_at_ms[key]
            del self._buckets[key]
        if len(self._records) + len(self._markers) > self._purge_at_size:
            # Amortised: a full scan only each time the join state doubled since the last one.
            self._records = {k: v for k, v in self._records.items() if v[1] > now_ms}
            self._shadow_records = {k: v for k, v in self._shadow_records.items() if v[1] > now_ms}
            self._markers = {k: at for k, at in self._markers.items() if at > now_ms}
            self._purge_at_size = max(100_000, 2 * (len(self._records) + len(self._markers)))

    def checkpoints(self, model: str, partitions: Iterable[int], space: str = "") -> dict[int, int]:
        stored = self._checkpoints.get(_space_key(model, space), {})
        return {p: stored.get(p, -1) for p in partitions}

    def prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        now_ms = self.clock()
        found: list[str | bytes | None] = []
        for event_id in event_ids:
            record = self._records.get(event_id)
            found.append(record[0] if record is not None and record[1] > now_ms else None)
        return found

    def shadow_prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        now_ms = self.clock()
        found: list[str | bytes | None] = []
        for event_id in event_ids:
            record = self._shadow_records.get(event_id)
            found.append(record[0] if record is not None and record[1] > now_ms else None)
        return found

    def shadow_event_ids(self, model: str, from_ms: int, to_ms: int, limit: int) -> list[str]:
        index = self._shadow_index.get(model, {})
        chosen = sorted(
            ((ts, event_id) for event_id, ts in index.items() if from_ms <= ts < to_ms),
            reverse=True,
        )
        return [event_id for _, event_id in chosen[:limit]]

    def labelled(self, model: str, event_ids: Sequence[str]) -> list[bool]:
        now_ms = self.clock()
        return [self._markers.get((model, event_id), 0) > now_ms for event_id in event_ids]

    def quality_reference(self, model: str) -> str | None:
        return self._quality_references.get(model)

    def save_quality_reference(self, model: str, document: str) -> None:
        self._quality_references[model] = document

    def admit(self, model: str, dimension: str, values: Sequence[str], cap: int) -> list[bool]:
        return self._admit_into(self._admitted[(model, dimension)], values, cap)

    def admit_models(self, values: Sequence[str], cap: int) -> list[bool]:
        return self._admit_into(self._admitted[("", "models")], values, cap)

    @staticmethod
    def _admit_into(members: set[str], values: Sequence[str], cap: int) -> list[bool]:
        admitted = []
        for value in values:
            if value not in members and len(members) < cap:
                members.add(value)
            admitted.append(value in members)
        return admitted

    def models(self) -> list[str]:
        return sorted(self._admitted[("", "models")])

    def read_windows(
        self, model: str, windows_ms: Sequence[int], now_ms: int
    ) -> list[dict[str, int]]:
        self._expire(self.clock())
        windows: list[dict[str, int]] = [{} for _ in windows_ms]
        for run in bucket_runs(self.layout, windows_ms, now_ms):
            summed: dict[str, int] = {}
            done = 0
            for index, (count, position) in enumerate(run.windows, start=1):
                for start in run.starts[done:count]:
                    for name, value in self._buckets.get((model, run.width_ms, start), {}).items():
                        summed[name] = summed.get(name, 0) + value
                done = count
                # The longest window takes the running sum itself; shorter ones a copy.
                windows[position] = summed if index == len(run.windows) else dict(summed)
        return windows

    def read_bucket_fields(
        self, model: str, window_ms: int, now_ms: int, fields: Sequence[str]
    ) -> list[tuple[int, list[int]]]:
        self._expire(self.clock())
        width = self.layout.width_for(window_ms)
        found = []
        for start in self.layout.bucket_starts(window_ms, now_ms):
            bucket = self._buckets.get((model, width, start), {})
            found.append((start, [bucket.get(name, 0) for name in fields]))
        return found

    def totals(self, model: str) -> dict[str, int]:
        return dict(self._totals.get(model, {}))

    def newest_event_ms(self, model: str) -> int | None:
        return self._newest_event_ms.get(model)

    def consumer_positions(self, group: str, topic: str) -> dict[int, int]:
        return dict(self._positions[(group, topic)])

    def save_consumer_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._positions[(group, topic)].update(positions)


def _space_key(model: str, space: str) -> str:
    # Model names cannot contain a NUL, so a spaced key never collides with a model's own.
    return f"{model}\0{space}" if space else model
