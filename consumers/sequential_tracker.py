"""Run each batch through the sequential detector (``detectors.sequential_detector``), exactly once.

The detector's state lives in the store, one document per model and partition, and moves only
with the window update it belongs to. Per update (:meth:`SequentialTracker.attach`):

1. Take each partition's state: the one this process last wrote, or the store's.
2. Feed it, in offset order, each whole-traffic series' events of the partition (segments are
   left to the histograms: one test per version and deployment is what the budget is set for).
3. Attach the new states, each with the offset its old state covered, and the alarms to the
   update. The store writes them only if the stored states still cover those offsets.
4. After the store's answer (:meth:`SequentialTracker.record`), forget the model's states if the
   update was refused: another writer moved them, and the next attempt reloads them.

A replayed event is dropped before it gets here (its checkpoint), and a state built on a stale
one is refused (step 3), so no event is counted twice in a state and no alarm is raised twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from detectors.reference import Reference
from detectors.sequential_detector import PartitionState, SequentialDetector, SequentialPolicy
from detectors.window_store import WindowStore
from detectors.window_update import ModelBatch, SequentialWrite, WindowUpdate

__all__ = ["SequentialTracker"]

FloatArray = npt.NDArray[np.float64]


class SequentialTracker:
    """The sequential states of every model and partition this process writes."""

    def __init__(self, store: WindowStore, policy: SequentialPolicy) -> None:
        self.store = store
        self.policy = policy
        self._states: dict[tuple[str, int], PartitionState] = {}
        self._detectors: dict[str, tuple[str, SequentialDetector]] = {}

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the states of partitions this process no longer (or newly) owns."""
        dropped = set(partitions)
        self._states = {key: state for key, state in self._states.items() if key[1] not in dropped}

    def attach(
        self,
        update: WindowUpdate,
        batch: ModelBatch,
        reference: Reference,
        numeric_values: FloatArray,
    ) -> None:
        """Steps 1 to 3 for ``batch``, whose window update is ``update``; ``numeric_values``:
        ``reference.numeric_values`` of its events."""
        if not reference.sequential_features or len(batch) == 0:
            return
        detector = self._detector(reference)
        model = batch.model
        partitions = np.unique(batch.partitions).tolist()
        self._load(model, [p for p in partitions if (model, p) not in self._states])
        values = numeric_values[:, reference.sequential_columns]
        whole_traffic = np.array([series.segment == "" for series in batch.series])[
            batch.row_series
        ]
        series_of_event = np.full(len(batch), -1, dtype=np.int64)
        series_of_event[batch.row_event[whole_traffic]] = batch.row_series[whole_traffic]
        for partition in partitions:
            state = self._states[(model, partition)]
            built_on = state.offset
            if state.field_tag != reference.field_tag:
                # Another reference's scores mean nothing under this one: start afresh.
                state.field_tag, state.series = reference.field_tag, {}
            mine = np.flatnonzero(batch.partitions == partition)
            mine = mine[np.argsort(batch.offsets[mine], kind="stable")]
            for series_index in np.unique(series_of_event[mine]).tolist():
                if series_index < 0:
                    continue
                rows = mine[series_of_event[mine] == series_index]
                key = batch.series[series_index].key
                series_state = state.series.setdefault(key, detector.start())
                alarms = detector.advance(series_state, values[rows], batch.timestamps_ms[rows])
                update.sequential_alarms += [
                    dataclasses.replace(alarm, field=f"{key}|{alarm.field}") for alarm in alarms
                ]
            # The cached state moves now; if the store refuses the update, record() drops it,
            # and if the write fails midway, the next attempt's offset check refuses it.
            state.offset = int(batch.offsets[mine].max())
            update.sequential_writes.append(
                SequentialWrite(partition, built_on, state.offset, state.to_json())
            )
        update.sequential_hold_ms = self.policy.hold_ms

    def record(self, update: WindowUpdate, written: bool) -> None:
        """Step 4: after a refusal, the model's states are reloaded on the next attempt."""
        if update.sequential_writes and not written:
            self._states = {key: s for key, s in self._states.items() if key[0] != update.model}

    def _load(self, model: str, partitions: list[int]) -> None:
        if not partitions:
            return
        for partition, text in self.store.sequential_states(model, partitions).items():
            self._states[(model, partition)] = (
                PartitionState() if text is None else PartitionState.from_json(text)
            )

    def _detector(self, reference: Reference) -> SequentialDetector:
        cached = self._detectors.get(reference.model)
        if cached is None or cached[0] != reference.reference_id:
            detector = SequentialDetector.for_features(reference.features, self.policy)
            cached = self._detectors[reference.model] = (reference.reference_id, detector)
        return cached[1]
