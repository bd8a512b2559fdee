"""Backtest: replay recorded events through the live path, embedded, at event time.

No Kafka and no Redis: the events go through the same :class:`~consumers.batching.BatchAssembler`,
:class:`~consumers.window_writer.WindowWriter`, reference binning, window store semantics
(:class:`~detectors.stores.memory_store.MemoryWindowStore`), statistics, decisions and
:class:`~alerting.evaluator.Evaluator` as ``driftline consume`` and ``driftline evaluate``, with
one clock for all of them: event time. This is how thresholds are tuned on last month's traffic
before they are trusted live.

Replay order, for a list of JSON lines:

1. Every line's timestamp is read; lines are replayed in event-time order (a stable sort, so
   equal timestamps keep file order). Lines that do not decode have no time and go first; the
   assembler refuses and counts them as the consumer would.
2. The evaluator ticks at every multiple of ``tick_ms`` of event time, from the first one after
   the first event to the first one after the last event. Before the tick at ``t`` every event
   with ``ts < t`` is applied, in batches of ``consumer.batch_size``, with the consumer clock at
   ``t``. Ticks are skipped only where every window is already empty (a gap in the traffic longer
   than the long window): such ticks cannot change anything.
3. Each tick's drift transitions go to ``on_transition`` as they happen (``driftline backtest``
   prints them as JSON lines); :meth:`Backtest.replay` returns the :class:`BacktestSummary`.

The same input gives the same transitions and summary, byte for byte: nothing depends on the wall
clock, and every statistic is computed from integer counts in a fixed order.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from alerting.alert_replay import AlertReplay
from alerting.drift_figures import DriftFigures, DriftTransition
from alerting.evaluator import Evaluator
from alerting.quality_thresholds import QualityTransition
from alerting.snapshot import SnapshotCollector
from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.window_writer import RefusedAt, WindowWriter
from detectors.reference import Reference
from detectors.reference_cache import ReferenceCache
from detectors.stores.memory_reference_store import MemoryReferenceStore
from detectors.stores.memory_store import MemoryWindowStore
from detectors.window_update import WindowLayout
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.events import timestamp_ms
from driftline.label_replay import LabelReplay

__all__ = ["Backtest", "BacktestSummary", "event_times"]


class _Stamp(msgspec.Struct):
    ts: int | datetime.datetime


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def event_times(lines: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Event time (epoch ms) of each line; -1 where the line has no readable ``ts``."""
    times = np.full(len(lines), -1, dtype=np.int64)
    for index, line in enumerate(lines):
        try:
            ts = _stamp_decoder.decode(line).ts
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if type(ts) is int and ts >= 0:
            times[index] = ts
        elif isinstance(ts, datetime.datetime):
            times[index] = timestamp_ms(ts)
    return times


@dataclass
class BacktestSummary:
    """Counts of one replay; :meth:`to_json` is the final line of ``driftline backtest``."""

    lines: int = 0
    applied: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    ticks: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    transitions: Counter[str] = field(default_factory=Counter)
    drifted_at_end: list[dict[str, Any]] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "summary",
            "lines": self.lines,
            "events_applied": self.applied,
            "refused": dict(sorted(self.refused.items())),
            "ticks": self.ticks,
            "first_event_ms": self.first_event_ms,
            "last_event_ms": self.last_event_ms,
            "transitions": {
                "drifted": self.transitions["drifted"],
                "ok": self.transitions["ok"],
            },
            "drifted_at_end": self.drifted_at_end,
            "references": dict(sorted(self.references.items())),
        }


class Backtest:
    """One embedded replay: its own in-memory store, reference cache and evaluator.

    ``now_ms`` is the single clock of the store, the consumer side and the evaluator; tests and
    ``bench/detection.py`` may drive :attr:`store` and :meth:`tick` directly.
    """

    def __init__(
        self,
        config: Config,
        references: Sequence[Reference],
        *,
        on_transition: Callable[[DriftTransition], None] | None = None,
        tick_seconds: float | None = None,
        on_alert: Callable[[str], object] | None = None,
        label_lines: Sequence[bytes] = (),
        on_quality: Callable[[QualityTransition], object] | None = None,
        on_verdict: Callable[[str], object] | None = None,
        verdict_every_seconds: float | None = None,
    ) -> None:
        seconds = config.evaluator.tick_seconds if tick_seconds is None else tick_seconds
        self.tick_ms = round(seconds * 1000)
        if self.tick_ms < 1:
            raise ValueError(f"tick_seconds must be at least 0.001, got {seconds!r}")
        self.config = config
        self.now_ms = 0
        self.layout: WindowLayout = layout_from_config(config)
        self.store = MemoryWindowStore(self.layout, clock=lambda: self.now_ms)
        cache = ReferenceCache(
            MemoryReferenceStore(tuple(references)),
            refresh_seconds=config.drift.reference_refresh_seconds,
        )
        self.summary = BacktestSummary(
            references={reference.model: reference.reference_id for reference in references}
        )
        self._on_transition = on_transition
        self.drift = DriftFigures(
            config.drift,
            cache.reference,
            confidence_bins=config.monitoring.confidence_bins,
            on_transition=self._transition,
        )
        self.assembler = BatchAssembler(config, self.store, cache.binner_for)
        self.writer = WindowWriter(self.store, binning_from_config(config), cache.binner_for)
        self.evaluator = Evaluator(
            config,
            self.store,
            SnapshotCollector(),
            contributors=[self.drift],
            clock_ms=lambda: self.now_ms,
            # The config's alert rules, on event time: alert and (dry-run) rollback lines.
            hooks=[AlertReplay(config, on_alert)] if config.rules and on_alert else [],
        )
        self._next_offset = 0
        # Labels (``--labels``): applied before each tick, judged in it (driftline.label_replay).
        self.labels: LabelReplay | None = None
        if label_lines:
            self.labels = LabelReplay(
                config, self.store, label_lines, on_quality or (lambda transition: None)
            )
            self.evaluator.contributors.append(self.labels.figures)
            self.evaluator.hooks[:0] = [self.labels.figures, self.labels.watcher]
        self._drifted: dict[tuple[str, str, str, str, str], DriftTransition] = {}
        if on_verdict is not None and verdict_every_seconds:
            # What the rollout gate would have answered every so often (driftline.verdict_replay).
            from driftline.verdict_replay import VerdictReplay

            alerts = next((h for h in self.evaluator.hooks if isinstance(h, AlertReplay)), None)
            self.evaluator.hooks.append(
                VerdictReplay(
                    config,
                    self.store,
                    every_ms=round(verdict_every_seconds * 1000),
                    emit=on_verdict,
                    clock_ms=lambda: self.now_ms,
                    drift_references=cache.reference,
                    alert_states=(lambda: ()) if alerts is None else alerts.engine.export_state,
                )
            )

    def _transition(self, transition: DriftTransition) -> None:
        self.summary.transitions[transition.state] += 1
        key = (
            transition.model,
            transition.version,
            transition.deployment,
            msgspec.json.encode(transition.segment).decode(),
            transition.feature,
        )
        if transition.state == "drifted":
            self._drifted[key] = transition
        else:
            self._drifted.pop(key, None)
        if self._on_transition is not None:
            self._on_transition(transition)

    def apply(self, lines: Sequence[bytes]) -> None:
        """Apply events (JSON lines) at the current clock, as one consumer batch does."""
        if not lines:
            return
        offsets = list(range(self._next_offset, self._next_offset + len(lines)))
        self._next_offset += len(lines)
        assembled = self.assembler.assemble([0] * len(lines), offsets, lines, self.now_ms)
        refused = [RefusedAt(0, offsets[item.index], item) for item in assembled.refused]
        for item in refused:
            self.summary.refused[str(item.refused.invalid.reason)] += 1
        self.writer.write_refused(self.writer.unapplied_refused(refused))
        self.summary.applied += self.writer.write_all(list(assembled.models.values()), self.now_ms)

    def tick(self, at_ms: int) -> None:
        self.now_ms = at_ms
        if self.labels is not None:
            self.labels.apply_until(at_ms)
        self.evaluator.tick()
        self.summary.ticks += 1

    def replay(
        self, lines: Sequence[bytes], progress: Callable[[int], None] | None = None
    ) -> BacktestSummary:
        """Replay ``lines`` (see the module docstring); ``progress`` gets lines done so far."""
        times = event_times(lines)
        order = np.argsort(times, kind="stable")
        ordered_times = times[order]
        self.summary.lines = len(lines)
        batch_size = self.config.consumer.batch_size
        start = int(np.searchsorted(ordered_times, 0, side="left"))
        timed = ordered_times[start:]
        if len(timed):
            self.summary.first_event_ms = int(timed[0])
            self.summary.last_event_ms = int(timed[-1])
        tick_ms = self.tick_ms
        # Undecodable lines carry no time: the first batch refuses them.
        self.now_ms = int(timed[0]) // tick_ms * tick_ms + tick_ms if len(timed) else 0
        for first in range(0, start, batch_size):
            self.apply([lines[i] for i in order[first : min(start, first + batch_size)].tolist()])
        if progress is not None:
            progress(start)
        if not len(timed):
            return self._finish()
        quiet_gap_ms = self.layout.long_ms + self.layout.rollup_ms + tick_ms
        position = start
        at = self.now_ms
        while position < len(lines) or (self.labels is not None and self.labels.pending):
            end = int(np.searchsorted(ordered_times, at, side="left"))
            self.now_ms = at
            for first in range(position, end, batch_size):
                chunk = order[first : min(end, first + batch_size)].tolist()
                self.apply([lines[i] for i in chunk])
            if end > position and progress is not None:
                progress(end)
            self.tick(at)
            position = end
            at += tick_ms
            if position < len(lines):
                # After a full long window without events every window is empty and stays so
                # until the next event: jump to the tick just after it.
                newest = int(ordered_times[position - 1]) if position > start else -1
                if at - tick_ms > newest + quiet_gap_ms:
                    at = max(at, int(ordered_times[position]) // tick_ms * tick_ms + tick_ms)
            elif (
                self.labels is not None
                and self.labels.next_time_ms is not None
                and at - tick_ms > int(ordered_times[-1]) + quiet_gap_ms
            ):
                # Only labels left: skip to the tick after the next one once windows are quiet.
                at = max(at, self.labels.next_time_ms // tick_ms * tick_ms + tick_ms)
        return self._finish()

    def _finish(self) -> BacktestSummary:
        self.summary.drifted_at_end = [
            {
                "model": t.model,
                "version": t.version,
                "deployment": t.deployment,
                "segment": t.segment,
                "feature": t.feature,
                "since": t.at_ms,
            }
            for _, t in sorted(self._drifted.items())
        ]
        return self.summary
