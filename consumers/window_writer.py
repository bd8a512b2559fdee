"""Apply assembled batches to a window store exactly once, whatever the runtime.

The writer keeps, per model and partition, the last offset the store has applied. Events at or
below it are dropped before binning (a replay after a crash or rebalance); if the store still
refuses an update because another consumer got there first (a zombie, or a rebalance in between),
the writer learns the new checkpoints, drops what they cover and tries again. Nothing is counted
twice and nothing is skipped, because a checkpoint only ever moves with the increments it covers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from consumers.batching import RefusedMessage
from consumers.exceptions import StoreStateLost
from detectors.window_store import ApplyResult, Conflict, StateLost, WindowStore
from detectors.window_update import (
    Binning,
    FeatureBinner,
    ModelBatch,
    WindowUpdate,
    build_window_update,
    partition_ranges,
)

__all__ = ["INVALID_EVENTS_MODEL", "WindowWriter"]

log = logging.getLogger(__name__)

INVALID_EVENTS_MODEL = "_invalid"
"""Pseudo-model whose totals count refused messages by reason (``bad_events|<reason>``).

Model names must start with a letter or digit, so no real model can collide with it.
"""

BAD_EVENTS_FIELD = "bad_events|"


@dataclass(frozen=True)
class RefusedAt:
    """A refused message with its Kafka position, ready to be counted."""

    partition: int
    offset: int
    refused: RefusedMessage


def with_known_offsets(update: WindowUpdate, known: Mapping[int, int]) -> WindowUpdate:
    """Tell the store what the writer knows was applied (``known``: partition -> offset), so the
    store can detect lost state; shared by the events and the labels writer."""
    update.ranges = [
        dataclasses.replace(span, known_applied_offset=known.get(span.partition, -1))
        for span in update.ranges
    ]
    return update


class WindowWriter:
    def __init__(
        self,
        store: WindowStore,
        binning: Binning,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
    ) -> None:
        self.store = store
        self.binning = binning
        self.feature_binner_for = feature_binner_for or (lambda model: None)
        self._checkpoints: dict[str, dict[int, int]] = defaultdict(dict)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached checkpoints of partitions this process no longer (or newly) owns."""
        dropped = set(partitions)
        for cached in self._checkpoints.values():
            for partition in dropped & cached.keys():
                del cached[partition]

    def write_all(self, batches: Sequence[ModelBatch], now_ms: int) -> int:
        """Apply several models' batches in one store round trip; returns events applied.

        Conflicts (rare: a rebalance or a zombie) fall back to :meth:`write` for that model.
        """
        pending = [self._unapplied(batch.model, batch) for batch in batches]
        pending = [batch for batch in pending if len(batch)]
        updates = [self._with_known_offsets(self._update(batch, now_ms)) for batch in pending]
        applied = 0
        for batch, update, result in zip(
            pending, updates, self.store.apply_many(updates), strict=True
        ):
            if self._record(update, result):
                applied += len(batch)
            else:
                applied += self.write(batch, now_ms)
        return applied

    def write(self, batch: ModelBatch, now_ms: int) -> int:
        """Apply ``batch``'s new events; returns how many events were applied."""
        while True:
            batch = self._unapplied(batch.model, batch)
            if len(batch) == 0:
                return 0
            if self._apply(self._update(batch, now_ms)):
                return len(batch)

    def _update(self, batch: ModelBatch, now_ms: int) -> WindowUpdate:
        binner = self.feature_binner_for(batch.model)
        return build_window_update(batch, self.store.layout, self.binning, now_ms, binner)

    def unapplied_refused(self, refused: Sequence[RefusedAt]) -> list[RefusedAt]:
        """The refused messages not yet counted (a replay finds its earlier ones counted)."""
        checkpoints = self._known(INVALID_EVENTS_MODEL, {item.partition for item in refused})
        return [item for item in refused if item.offset > checkpoints[item.partition]]

    def write_refused(self, refused: Sequence[RefusedAt]) -> None:
        """Count refused messages by reason (``bad_events|<reason>``), exactly once."""
        pending = self.unapplied_refused(refused)
        while pending:
            totals: dict[str, int] = defaultdict(int)
            for item in pending:
                totals[BAD_EVENTS_FIELD + item.refused.invalid.reason] += 1
            update = WindowUpdate(
                model=INVALID_EVENTS_MODEL,
                ranges=partition_ranges(
                    np.asarray([item.partition for item in pending], dtype=np.int32),
                    np.asarray([item.offset for item in pending], dtype=np.int64),
                ),
                buckets={},
                totals=dict(totals),
                newest_event_ms=0,
            )
            if self._apply(update):
                return
            pending = self.unapplied_refused(pending)

    def _unapplied(self, model: str, batch: ModelBatch) -> ModelBatch:
        partitions = batch.partitions
        checkpoints = self._known(model, set(np.unique(partitions).tolist()))
        floor = np.fromiter(
            (checkpoints[p] for p in partitions.tolist()), dtype=np.int64, count=len(partitions)
        )
        fresh = batch.offsets > floor
        return batch if fresh.all() else batch.select(fresh)

    def _known(self, model: str, partitions: set[int]) -> dict[int, int]:
        cached = self._checkpoints[model]
        missing = partitions - cached.keys()
        if missing:
            cached.update(self.store.checkpoints(model, missing))
        return cached

    def _apply(self, update: WindowUpdate) -> bool:
        update = self._with_known_offsets(update)
        return self._record(update, self.store.apply(update))

    def _with_known_offsets(self, update: WindowUpdate) -> WindowUpdate:
        return with_known_offsets(update, self._checkpoints[update.model])

    def _record(self, update: WindowUpdate, result: ApplyResult) -> bool:
        """Remember the checkpoints a result reveals; true when the update was written."""
        cached = self._checkpoints[update.model]
        if isinstance(result, StateLost):
            self._checkpoints.clear()
            raise StoreStateLost(
                f"model {update.model}: checkpoints {dict(result.checkpoints)} are below the "
                f"offsets already applied {dict(cached)}; the store lost its state"
            )
        if isinstance(result, Conflict):
            log.info(
                "model %s: offsets applied elsewhere %s; re-filtering",
                update.model,
                dict(result.checkpoints),
            )
            cached.update(result.checkpoints)
            return False
        for span in update.ranges:
            cached[span.partition] = span.last_offset
        return True
