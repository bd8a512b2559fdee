"""The in-memory window store: the same semantics as Redis, in one process, for ``backtest``.

Time is whatever the ``clock`` says: wall-clock time for tests that compare it with Redis, event
time for a backtest replaying last month's traffic. A bucket whose expiry is at or before the
clock's time is gone, as an expired Redis key is.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from detectors.window_store import Applied, ApplyResult, Conflict, StateLost, WindowStore
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

    def apply(self, update: WindowUpdate) -> ApplyResult:
        checkpoints = self._checkpoints[update.model]
        current = {span.partition: checkpoints.get(span.partition, -1) for span in update.ranges}
        if any(current[span.partition] < span.known_applied_offset for span in update.ranges):
            return StateLost(current)
        if any(current[span.partition] >= span.first_offset for span in update.ranges):
            return Conflict(current)
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

    def _expire(self, now_ms: int) -> None:
        expired = [key for key, at in self._expire_at_ms.items() if at <= now_ms]
        for key in expired:
            del self._expire_at_ms[key]
            del self._buckets[key]

    def checkpoints(self, model: str, partitions: Iterable[int]) -> dict[int, int]:
        stored = self._checkpoints.get(model, {})
        return {p: stored.get(p, -1) for p in partitions}

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
        windows = []
        for window_ms in windows_ms:
            width = self.layout.width_for(window_ms)
            summed: dict[str, int] = {}
            for start in self.layout.bucket_starts(window_ms, now_ms):
                for name, value in self._buckets.get((model, width, start), {}).items():
                    summed[name] = summed.get(name, 0) + value
            windows.append(summed)
        return windows

    def totals(self, model: str) -> dict[str, int]:
        return dict(self._totals.get(model, {}))

    def newest_event_ms(self, model: str) -> int | None:
        return self._newest_event_ms.get(model)

    def consumer_positions(self, group: str, topic: str) -> dict[int, int]:
        return dict(self._positions[(group, topic)])

    def save_consumer_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._positions[(group, topic)].update(positions)
