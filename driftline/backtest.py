"""Backtest: replay recorded events through the live path, embedded, at event time.

No Kafka and no Redis: the events go through the same :class:`~consumers.batching.BatchAssembler`,
:class:`~consumers.window_writer.WindowWriter`, reference binning, window store semantics
(:class:`~detectors.stores.memory_store.MemoryWindowStore`), statistics, decisions and
:class:`~alerting.evaluator.Evaluator` as ``driftline consume`` and ``driftline evaluate``, with
one clock for all of them: event time. This is how thresholds are tuned on last month's traffic
before they are trusted live.

Replay order, for JSON lines (:class:`~driftline.time_ordered_lines.TimeOrderedLines`, which
reads files larger than memory without holding them):

1. Lines are replayed in event-time order (that of a stable sort, so equal timestamps keep file
   order). Lines without a readable ``ts`` go first; the assembler refuses and counts them as the
   consumer would.
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
from driftline.events import MAX_TIMESTAMP_MS, timestamp_ms
from driftline.label_replay import LabelReplay
from driftline.time_ordered_lines import LineCursor, TimeOrderedLines

__all__ = ["Backtest", "BacktestSummary", "event_time"]


class _Stamp(msgspec.Struct, gc=False):
    ts: int | datetime.datetime


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def event_time(line: bytes) -> int:
    """Event time (epoch ms) of a line; -1 where it has no readable ``ts``."""
    try:
        ts = _stamp_decoder.decode(line).ts
    except (msgspec.DecodeError, msgspec.ValidationError):
        return -1
    time_ms = ts if type(ts) is int else timestamp_ms(ts)
    return time_ms if 0 <= time_ms <= MAX_TIMESTAMP_MS else -1


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
    sequential_alarms: int = 0
    sequential_episodes: int = 0
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
            # Episodes are what the sequential test's false-alarm budget counts.
            "sequential": {
                "alarms": self.sequential_alarms,
                "episodes": self.sequential_episodes,
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
        label_lines: TimeOrderedLines | Sequence[bytes] = (),
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
        self.writer = WindowWriter(
            self.store,
            binning_from_config(config),
            cache.binner_for,
            config.drift.sequential_policy(),
        )
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
        self.writer.write_refused(refused)  # counts only those not counted yet
        self.summary.applied += self.writer.write_all(list(assembled.models.values()), self.now_ms)

    def tick(self, at_ms: int) -> None:
        self.now_ms = at_ms
        if self.labels is not None:
            self.labels.apply_until(at_ms)
        self.evaluator.tick()
        self.summary.ticks += 1

    def replay(
        self,
        lines: TimeOrderedLines | Sequence[bytes],
        progress: Callable[[int], None] | None = None,
    ) -> BacktestSummary:
        """Replay ``lines`` (see the module docstring); ``progress`` gets lines done so far."""
        ordered = TimeOrderedLines.of(lines, event_time)
        self.summary.lines = ordered.count
        self.summary.first_event_ms = ordered.first_ms
        self.summary.last_event_ms = ordered.last_ms
        pending = LineCursor(ordered)
        done = 0

        def apply_before(at_ms: int) -> None:
            nonlocal done
            for batch in pending.batches_before(at_ms, self.config.consumer.batch_size):
                self.apply(batch.lines)
                done += len(batch)
                if progress is not None:
                    progress(done)

        tick_ms = self.tick_ms
        first_ms = ordered.first_ms
        self.now_ms = 0 if first_ms is None else first_ms // tick_ms * tick_ms + tick_ms
        apply_before(0)  # lines without a time come first: the first batch refuses them
        if first_ms is None:
            return self._finish()
        quiet_gap_ms = self.layout.long_ms + self.layout.rollup_ms + tick_ms
        at = self.now_ms
        while pending.next_ms is not None or (self.labels is not None and self.labels.pending):
            self.now_ms = at
            apply_before(at)
            self.tick(at)
            at += tick_ms
            if at - tick_ms > pending.last_ms + quiet_gap_ms:
                # After a full long window without events every window is empty and stays so
                # until the next event (or, once all are applied, the next label): jump to the
                # tick just after it.
                upcoming = pending.next_ms
                if upcoming is None and self.labels is not None:
                    upcoming = self.labels.next_time_ms
                if upcoming is not None:
                    at = max(at, upcoming // tick_ms * tick_ms + tick_ms)
        return self._finish()

    def _finish(self) -> BacktestSummary:
        for model in self.summary.references:
            for episode in self.store.sequential_alarms(model).values():
                self.summary.sequential_alarms += episode.count
                self.summary.sequential_episodes += episode.episodes
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
