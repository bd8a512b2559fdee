"""Labels in ``backtest``: label lines replayed at event time through the live label path.

:class:`LabelReplay` feeds a :class:`~driftline.backtest.Backtest` the labels of a JSON-lines
file: before each evaluator tick at ``t``, every label with ``ts < t`` goes through the same
:class:`~consumers.label_batching.LabelAssembler` (the join finds the predictions the replayed
events put on record) and :class:`~consumers.label_writer.LabelWriter` as in
``driftline consume-labels``, with the clock at ``t``. Its :class:`QualityFigures` contributor and
threshold watcher join the backtest's evaluator, so each crossing of ``quality.thresholds`` is
reported as it happens. A label line without a readable ``ts`` is applied at the first tick, with
that tick as its time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from alerting.quality_figures import QualityFigures, QualityReferences
from alerting.quality_thresholds import QualityThresholdWatcher, QualityTransition
from consumers.label_batching import LabelAssembler
from consumers.label_writer import LabelWriter, RefusedLabelAt
from detectors.window_store import WindowStore
from driftline.config import Config
from driftline.events import InvalidEvent, decode_label, timestamp_ms

__all__ = ["LabelReplay"]


def label_times(lines: Sequence[bytes]) -> npt.NDArray[np.int64]:
    """Label time (epoch ms) of each line; -1 where it has none."""
    times = np.full(len(lines), -1, dtype=np.int64)
    for index, line in enumerate(lines):
        label = decode_label(line)
        if not isinstance(label, InvalidEvent) and label.ts is not None:
            times[index] = timestamp_ms(label.ts)
    return times


class LabelReplay:
    def __init__(
        self,
        config: Config,
        store: WindowStore,
        lines: Sequence[bytes],
        on_transition: Callable[[QualityTransition], object],
    ) -> None:
        self.config = config
        self.lines = lines
        times = label_times(lines)
        self._order = np.argsort(times, kind="stable")
        self._times = times[self._order]
        self._position = 0
        self.assembler = LabelAssembler(config, store)
        self.writer = LabelWriter(config, store)
        references = QualityReferences(store, config.quality.reference_refresh_seconds)
        self.figures = QualityFigures(config, store, references.reference)
        self.watcher = QualityThresholdWatcher(config.quality.thresholds, on_transition)
        self.applied = 0
        self.refused: Counter[str] = Counter()

    @property
    def pending(self) -> bool:
        return self._position < len(self.lines)

    @property
    def next_time_ms(self) -> int | None:
        return int(self._times[self._position]) if self.pending else None

    def apply_until(self, at_ms: int) -> None:
        """Apply every label stamped before ``at_ms``, in batches, with the clock at ``at_ms``."""
        end = int(np.searchsorted(self._times, at_ms, side="left"))
        batch_size = self.config.consumer.batch_size
        for first in range(self._position, end, batch_size):
            chunk = self._order[first : min(end, first + batch_size)].tolist()
            values: list[bytes | None] = [self.lines[i] for i in chunk]
            offsets = list(range(first, first + len(chunk)))
            stamps = [int(self._times[first + k]) for k in range(len(chunk))]
            assembled = self.assembler.assemble(
                [0] * len(chunk), offsets, [s if s >= 0 else at_ms for s in stamps], values, at_ms
            )
            refused = [RefusedLabelAt(0, offsets[r.index], r) for r in assembled.refused]
            for item in refused:
                self.refused[item.refused.reason] += 1
            self.writer.write_refused(refused)
            self.applied += self.writer.write_all(assembled.models.values(), at_ms)
        self._position = max(self._position, end)
