"""What a writer knows the store has applied: per model and partition, the last offset.

The events writer (``consumers.window_writer``) and the labels writer (``consumers.label_writer``)
each keep one, in their own checkpoint space. Events at or below a known offset are dropped
before any work is done on them (a replay after a crash or a rebalance); refused messages are
counted through it too (:meth:`AppliedOffsets.count_refused`), so a replay never counts one
twice. The store, not this cache, has the last word: an update it refuses
(:class:`~detectors.window_store.Conflict`) teaches the cache the store's checkpoints, and one
whose checkpoints went backwards (:class:`~detectors.window_store.StateLost`) means the store
lost its state.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from consumers.exceptions import StoreStateLost
from detectors.window_store import ApplyResult, Conflict, StateLost, WindowStore
from detectors.window_update import BoolArray, IntArray, WindowUpdate, partition_ranges

__all__ = ["AppliedOffsets"]

log = logging.getLogger(__name__)


class _Positioned(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


PositionedT = TypeVar("PositionedT", bound=_Positioned)


class AppliedOffsets:
    """The last applied offset per model and partition, in one checkpoint ``space``."""

    def __init__(self, store: WindowStore, space: str = "") -> None:
        self.store = store
        self.space = space
        self._by_model: dict[str, dict[int, int]] = defaultdict(dict)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is known of partitions this process no longer (or newly) owns."""
        dropped = set(partitions)
        for known in self._by_model.values():
            for partition in dropped & known.keys():
                del known[partition]

    def known(self, model: str, partitions: set[int]) -> dict[int, int]:
        """Per partition (at least those asked), the last applied offset; -1 for none."""
        known = self._by_model[model]
        missing = partitions - known.keys()
        if missing:
            known.update(self.store.checkpoints(model, missing, self.space))
        return known

    def fresh(self, model: str, partitions: npt.NDArray[np.int32], offsets: IntArray) -> BoolArray:
        """Which of these positions the store has not applied yet."""
        known = self.known(model, set(np.unique(partitions).tolist()))
        floor = np.fromiter(
            (known[p] for p in partitions.tolist()), dtype=np.int64, count=len(partitions)
        )
        fresh: BoolArray = offsets > floor
        return fresh

    def unapplied(self, model: str, items: Sequence[PositionedT]) -> list[PositionedT]:
        """The items (refused messages, one by one) the store has not counted yet."""
        known = self.known(model, {item.partition for item in items})
        return [item for item in items if item.offset > known[item.partition]]

    def count_refused(
        self, model: str, items: Sequence[PositionedT], field_of: Callable[[PositionedT], str]
    ) -> None:
        """Count refused messages in ``model``'s totals, one per ``field_of(item)``, exactly once:
        a replay finds its earlier ones counted, and a conflict re-filters and tries again."""
        pending = self.unapplied(model, items)
        while pending:
            update = WindowUpdate(
                model=model,
                ranges=partition_ranges(
                    np.asarray([item.partition for item in pending], dtype=np.int32),
                    np.asarray([item.offset for item in pending], dtype=np.int64),
                ),
                buckets={},
                totals=dict(Counter(map(field_of, pending))),
                newest_event_ms=0,
                checkpoint_space=self.space,
            )
            if self.record(update, self.store.apply(self.tell(update))):
                return
            pending = self.unapplied(model, pending)

    def tell(self, update: WindowUpdate) -> WindowUpdate:
        """Give the update what is known to be applied, so the store can detect lost state."""
        known = self._by_model[update.model]
        update.ranges = [
            dataclasses.replace(span, known_applied_offset=known.get(span.partition, -1))
            for span in update.ranges
        ]
        return update

    def record(self, update: WindowUpdate, result: ApplyResult) -> bool:
        """Learn from the store's answer to ``update``; true when the update was written."""
        known = self._by_model[update.model]
        if isinstance(result, StateLost):
            self._by_model.clear()
            where = f"model {update.model}" + (f" ({self.space})" if self.space else "")
            raise StoreStateLost(
                f"{where}: checkpoints {dict(result.checkpoints)} are below the "
                f"offsets already applied {dict(known)}; the store lost its state"
            )
        if isinstance(result, Conflict):
            # Duplicate label markers are the caller's to handle; the offsets may still be new.
            if not result.labelled:
                log.info(
                    "model %s: offsets applied elsewhere %s; re-filtering",
                    update.model,
                    dict(result.checkpoints),
                )
                known.update(result.checkpoints)
            return False
        for span in update.ranges:
            known[span.partition] = span.last_offset
        return True
