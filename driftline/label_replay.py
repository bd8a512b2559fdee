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

from alerting.quality_figures import QualityFigures, QualityReferences
from alerting.quality_thresholds import QualityThresholdWatcher, QualityTransition
from consumers.label_batching import LabelAssembler
from consumers.label_writer import LabelWriter, RefusedLabelAt
from detectors.window_store import WindowStore
from driftline.config import Config
from driftline.events import InvalidEvent, decode_label, timestamp_ms
from driftline.time_ordered_lines import LineCursor, TimeOrderedLines

__all__ = ["LabelReplay", "label_time"]


def label_time(line: bytes) -> int:
    """Label time (epoch ms) of a line; -1 where it has none."""
    label = decode_label(line)
    if isinstance(label, InvalidEvent) or label.ts is None:
        return -1
    return timestamp_ms(label.ts)


class LabelReplay:
    def __init__(
        self,
        config: Config,
        store: WindowStore,
        lines: TimeOrderedLines | Sequence[bytes],
        on_transition: Callable[[QualityTransition], object],
    ) -> None:
        self.config = config
        self._pending = LineCursor(TimeOrderedLines.of(lines, label_time))
        self._next_offset = 0
        self.assembler = LabelAssembler(config, store)
        self.writer = LabelWriter(config, store)
        references = QualityReferences(store, config.quality.reference_refresh_seconds)
        self.figures = QualityFigures(config, store, references.reference)
        self.watcher = QualityThresholdWatcher(config.quality.thresholds, on_transition)
        self.applied = 0
        self.refused: Counter[str] = Counter()

    @property
    def pending(self) -> bool:
        return self._pending.next_ms is not None

    @property
    def next_time_ms(self) -> int | None:
        return self._pending.next_ms

    def apply_until(self, at_ms: int) -> None:
        """Apply every label stamped before ``at_ms``, in batches, with the clock at ``at_ms``."""
        for batch in self._pending.batches_before(at_ms, self.config.consumer.batch_size):
            offsets = list(range(self._next_offset, self._next_offset + len(batch)))
            self._next_offset += len(batch)
            assembled = self.assembler.assemble(
                [0] * len(batch),
                offsets,
                np.where(batch.times_ms >= 0, batch.times_ms, at_ms).tolist(),
                batch.lines,
                at_ms,
            )
            refused = [RefusedLabelAt(0, offsets[r.index], r) for r in assembled.refused]
            for item in refused:
                self.refused[item.refused.reason] += 1
            self.writer.write_refused(refused)
            self.applied += self.writer.write_all(assembled.models.values(), at_ms)
