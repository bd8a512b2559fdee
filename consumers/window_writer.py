"""Apply assembled batches to a window store exactly once, whatever the runtime.

The writer keeps, per model and partition, the last offset the store has applied
(``consumers.applied_offsets``). Events at or below it are dropped before binning (a replay after
a crash or rebalance); if the store still refuses an update because another consumer got there
first (a zombie, or a rebalance in between), the writer learns the new checkpoints, drops what
they cover and tries again. Nothing is counted
twice and nothing is skipped, because a checkpoint only ever moves with the increments it covers.
With a ``sequential`` policy, the sequential detector's states and alarms ride on the same update
(``consumers.sequential_tracker``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from consumers.applied_offsets import AppliedOffsets
from consumers.batching import RefusedMessage
from consumers.exceptions import StoreStateInconsistent
from consumers.sequential_tracker import SequentialTracker
from detectors.reference import Reference
from detectors.sequential_detector import SequentialPolicy
from detectors.window_store import Applied, ApplyResult, WindowStore
from detectors.window_update import (
    Binning,
    FeatureBinner,
    ModelBatch,
    WindowUpdate,
    build_window_update,
)

__all__ = ["INVALID_EVENTS_MODEL", "WindowWriter"]

INVALID_EVENTS_MODEL = "_invalid"
"""Pseudo-model whose totals count refused messages by reason (``bad_events|<reason>``).

Model names must start with a letter or digit, so no real model can collide with it.
"""

BAD_EVENTS_FIELD = "bad_events|"

REFUSALS_WITHOUT_PROGRESS = 3
"""Refusals in a row that name no offset applied elsewhere before a batch is given up: the first
has the sequential states reloaded, which settles a refusal a rebalance caused."""


@dataclass(frozen=True)
class RefusedAt:
    """A refused message with its Kafka position, ready to be counted."""

    partition: int
    offset: int
    refused: RefusedMessage


class WindowWriter:
    def __init__(
        self,
        store: WindowStore,
        binning: Binning,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
        sequential: SequentialPolicy | None = None,
    ) -> None:
        self.store = store
        self.binning = binning
        self.feature_binner_for = feature_binner_for or (lambda model: None)
        self.applied = AppliedOffsets(store)
        self.sequential = None if sequential is None else SequentialTracker(store, sequential)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached checkpoints (and sequential states) of partitions this process no longer
        (or newly) owns."""
        partitions = list(partitions)
        self.applied.forget(partitions)
        if self.sequential is not None:
            self.sequential.forget(partitions)

    def write_all(self, batches: Sequence[ModelBatch], now_ms: int) -> int:
        """Apply several models' batches in one store round trip; returns events applied.

        Conflicts (rare: a rebalance or a zombie) fall back to :meth:`write` for that model.
        """
        pending = [self._unapplied(batch) for batch in batches]
        pending = [batch for batch in pending if len(batch)]
        updates = [self.applied.tell(self.window_update(batch, now_ms)) for batch in pending]
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
        """Apply ``batch``'s new events; returns how many events were applied.

        A refusal either names offsets applied elsewhere (a rebalance, a zombie), which the next
        attempt leaves out, or has the sequential states reloaded. One that does neither, time
        after time, would be retried forever: it raises :class:`StoreStateInconsistent`.
        """
        refusals_in_a_row = 0
        while True:
            remaining = self._unapplied(batch)
            if len(remaining) == 0:
                return 0
            if len(remaining) < len(batch):
                refusals_in_a_row = 0  # the refusal named offsets applied elsewhere: progress
            batch = remaining
            if self._apply(self.window_update(batch, now_ms)):
                return len(batch)
            refusals_in_a_row += 1
            if refusals_in_a_row == REFUSALS_WITHOUT_PROGRESS:
                raise StoreStateInconsistent(
                    f"model {batch.model}: the store refused a batch {refusals_in_a_row} times as"
                    " applied elsewhere, but its checkpoints cover none of it (partitions"
                    f" {sorted(set(batch.partitions.tolist()))}): its stored state contradicts"
                    " itself, for example a sequential state edited or restored by hand. Delete"
                    " the model's `sequential` hash (its drift test starts afresh) and restart."
                )

    def window_update(self, batch: ModelBatch, now_ms: int) -> WindowUpdate:
        """``batch``'s window update, with its sequential states and alarms; not yet applied."""
        binner = self.feature_binner_for(batch.model)
        if (
            self.sequential is None
            or not isinstance(binner, Reference)
            or not binner.sequential_features
            or not batch.features
        ):
            return build_window_update(batch, self.store.layout, self.binning, now_ms, binner)
        # One pass over the events' features for both the binning and the sequential test.
        numeric_values = binner.numeric_values(batch.features)
        update = build_window_update(
            batch, self.store.layout, self.binning, now_ms, binner, numeric_values
        )
        self.sequential.attach(update, batch, binner, numeric_values)
        return update

    def unapplied_refused(self, refused: Sequence[RefusedAt]) -> list[RefusedAt]:
        """The refused messages not yet counted (a replay finds its earlier ones counted)."""
        return self.applied.unapplied(INVALID_EVENTS_MODEL, refused)

    def write_refused(self, refused: Sequence[RefusedAt]) -> None:
        """Count refused messages by reason (``bad_events|<reason>``), exactly once."""
        self.applied.count_refused(
            INVALID_EVENTS_MODEL,
            refused,
            lambda item: BAD_EVENTS_FIELD + item.refused.invalid.reason,
        )

    def _unapplied(self, batch: ModelBatch) -> ModelBatch:
        fresh = self.applied.fresh(batch.model, batch.partitions, batch.offsets)
        return batch if fresh.all() else batch.select(fresh)

    def _apply(self, update: WindowUpdate) -> bool:
        return self._record(update, self.store.apply(self.applied.tell(update)))

    def _record(self, update: WindowUpdate, result: ApplyResult) -> bool:
        if self.sequential is not None:
            self.sequential.record(update, isinstance(result, Applied))
        return self.applied.record(update, result)
