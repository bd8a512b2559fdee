"""Apply joined labels to the window store exactly once, as ``consumers.window_writer`` does events.

Each model's labels become one :class:`~detectors.window_update.WindowUpdate` in the ``labels``
checkpoint space (per (model, labels-topic partition) checkpoints, apart from the events topic's),
applied atomically with its offsets and its duplicate markers. Labels counted under no model
(undecodable, unknown event id, unknown model) are counted by reason in the totals of the
``_invalid`` pseudo-model, in the same space, exactly once as well.

The writer keeps the checkpoints it has seen. On a :class:`~detectors.window_store.Conflict` it
either drops the offsets another consumer applied (a replay, a rebalance, a zombie) or, when the
store found some markers already set, counts those labels as duplicates, and tries again: the
store, not this cache, decides, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consumers.applied_offsets import AppliedOffsets
from consumers.label_batching import RefusedLabel
from consumers.window_writer import INVALID_EVENTS_MODEL
from detectors.label_update import LABELS_CHECKPOINT_SPACE, LabelBatch, build_label_update
from detectors.window_store import ApplyResult, Conflict, WindowStore
from detectors.window_update import WindowUpdate
from driftline.config import Config

__all__ = ["REFUSED_LABELS_FIELD", "LabelWriter", "RefusedLabelAt"]

REFUSED_LABELS_FIELD = "labels_refused|"
"""Prefix of the ``_invalid`` totals that count labels of no model, by reason."""


@dataclass(frozen=True, slots=True)
class RefusedLabelAt:
    partition: int
    offset: int
    refused: RefusedLabel


class LabelWriter:
    def __init__(self, config: Config, store: WindowStore) -> None:
        self.config = config
        self.store = store
        self.applied = AppliedOffsets(store, LABELS_CHECKPOINT_SPACE)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached checkpoints of partitions this process no longer (or newly) owns."""
        self.applied.forget(partitions)

    def unapplied_refused(self, refused: Sequence[RefusedLabelAt]) -> list[RefusedLabelAt]:
        """The refused labels not yet counted (a replay finds its earlier ones counted)."""
        return self.applied.unapplied(INVALID_EVENTS_MODEL, refused)

    def write_refused(self, refused: Sequence[RefusedLabelAt]) -> None:
        """Count labels of no model by reason, exactly once."""
        self.applied.count_refused(
            INVALID_EVENTS_MODEL, refused, lambda item: REFUSED_LABELS_FIELD + item.refused.reason
        )

    def write_all(self, batches: Iterable[LabelBatch], now_ms: int) -> int:
        """Apply several models' labels in one store round trip; returns labels applied.

        Conflicts (duplicates counted elsewhere meanwhile, replays) fall back to one model at a
        time until the store accepts.
        """
        pending = [self._unapplied(batch) for batch in batches]
        pending = [batch for batch in pending if len(batch)]
        updates = [self.applied.tell(self._update(batch, now_ms)) for batch in pending]
        applied = 0
        for batch, update, result in zip(
            pending, updates, self.store.apply_many(updates), strict=True
        ):
            applied += self._settle(batch, update, result, now_ms)
        return applied

    def _settle(
        self, batch: LabelBatch, update: WindowUpdate, result: ApplyResult, now_ms: int
    ) -> int:
        while not self.applied.record(update, result):
            if isinstance(result, Conflict) and result.labelled:
                batch = batch.with_duplicates(result.labelled)
            batch = self._unapplied(batch)
            if len(batch) == 0:
                return 0
            update = self.applied.tell(self._update(batch, now_ms))
            result = self.store.apply(update)
        return len(batch)

    def _update(self, batch: LabelBatch, now_ms: int) -> WindowUpdate:
        settings = self.config.model(batch.model).labels
        assert settings is not None
        return build_label_update(
            batch,
            self.store.layout,
            self.config.monitoring.confidence_bins,
            settings.positive_classes,
            settings.error_resolution,
            now_ms,
        )

    def _unapplied(self, batch: LabelBatch) -> LabelBatch:
        fresh = self.applied.fresh(batch.model, batch.partitions, batch.offsets)
        return batch if fresh.all() else batch.select(fresh)
