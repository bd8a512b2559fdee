"""The evaluator: every tick, read each model's windows and publish one snapshot of figures.

A tick, in order:

1. List the models (configured ones and those the consumers admitted).
2. For each model, read the short and long windows (and the drift fast window, from the short
   window's buckets) in one pipelined round trip and split them by series
   (``detectors.window_summary``), and the sequential test's alarm episodes when it is on.
3. Hand the windows to every :class:`Contributor` (traffic figures here; drift, quality and alert
   rules plug in the same way), which add samples to the snapshot.
4. Add lifetime counters, refused messages, freshness, consumer lag and the tick's own health.
5. Run every :class:`TickHook` on the complete snapshot (the alert rules, see
   ``alerting.alerting_step``).
6. Publish the snapshot to the collector, in one swap.

With ``leave_out_failures`` (the long-running evaluator, ``status``), steps 2 to 5 are guarded
one model, and one part, at a time: state Redis cannot give back (a key edited by hand, a restore
from another version) leaves that model's figures, or that part, out of the tick, logged and
counted in ``driftline_evaluator_errors_total``, and every other model is still monitored.
Backtest and the rollout gate want the error instead: a replay must not skip a model silently,
nor a gate judge without figures.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from alerting import metric_names as names
from alerting.consumer_lag import ConsumerLagReader
from alerting.evaluator_lease import EvaluatorLease
from alerting.snapshot import Snapshot, SnapshotCollector
from consumers.window_writer import BAD_EVENTS_FIELD, INVALID_EVENTS_MODEL
from detectors.latency_sketch import LogBucketMapping
from detectors.series import Metric, Series, split_field
from detectors.window_store import AlarmEpisode, WindowStore
from detectors.window_summary import SeriesWindow, summarise
from driftline.config import Config

__all__ = ["Contributor", "Evaluator", "ModelWindows", "TickHook", "TrafficFigures"]

log = logging.getLogger(__name__)

LATENCY_QUANTILES = (0.5, 0.95, 0.99)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ModelWindows:
    """One model's windows at one tick: window name -> series -> window.

    ``windows`` holds the short and long windows every contributor reports on; ``fast`` is the
    drift fast window (``drift.fast_window_seconds``), read for drift only, ``None`` when off;
    ``sequential`` the sequential test's alarm episodes by ``<series key>|<feature>`` (empty when
    the test is off).
    """

    model: str
    now_ms: int
    windows: Mapping[str, Mapping[Series, SeriesWindow]]
    window_seconds: Mapping[str, float]
    fast: Mapping[Series, SeriesWindow] | None = None
    sequential: Mapping[str, AlarmEpisode] = field(default_factory=dict)


class Contributor(Protocol):
    """Adds figures computed from a model's windows to the tick's snapshot."""

    def contribute(self, model: ModelWindows, snapshot: Snapshot) -> None: ...


class TickHook(Protocol):
    """Runs once per tick after every model's figures are in the snapshot (the alert rules)."""

    def after_figures(self, snapshot: Snapshot) -> None: ...


@runtime_checkable
class TakeOverHook(Protocol):
    """A hook with state to resume when this evaluator becomes the active one."""

    def take_over(self, now_ms: int) -> None: ...


class TrafficFigures:
    """Events, throughput, latency quantiles, error ratio and confidence per series and window."""

    def __init__(self, latency: LogBucketMapping) -> None:
        self.latency = latency

    def contribute(self, model: ModelWindows, snapshot: Snapshot) -> None:
        for window_name, by_series in model.windows.items():
            seconds = model.window_seconds[window_name]
            for series, window in by_series.items():
                labels = (model.model, *series, window_name)
                snapshot.add(names.WINDOW_EVENTS, labels, window.events)
                snapshot.add(names.THROUGHPUT, labels, window.events / seconds)
                snapshot.add(names.ERROR_RATIO, labels, window.error_ratio)
                snapshot.add(names.CONFIDENCE_MEAN, labels, window.confidence_mean)
                snapshot.add(names.LOW_CONFIDENCE_RATIO, labels, window.low_confidence_ratio)
                for q in LATENCY_QUANTILES:
                    milliseconds = window.latency_quantile(self.latency, q)
                    snapshot.add(names.LATENCY, (*labels, str(q)), milliseconds / 1000)


class Evaluator:
    """Computes snapshots; :meth:`run` ticks until its stop event is set."""

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        collector: SnapshotCollector,
        *,
        contributors: Iterable[Contributor] = (),
        lag_reader: ConsumerLagReader | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        hooks: Iterable[TickHook] = (),
        lease: EvaluatorLease | None = None,
        leave_out_failures: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.collector = collector
        latency = LogBucketMapping(config.monitoring.latency_relative_accuracy)
        self.contributors: list[Contributor] = [TrafficFigures(latency), *contributors]
        self.lag_reader = lag_reader
        self.clock_ms = clock_ms
        self.hooks = list(hooks)
        self.lease = lease
        self.ticks = 0
        self.leave_out_failures = leave_out_failures
        self.errors: Counter[str] = Counter()  # by part: "model:<name>", "bad_events", ...
        self._failing: set[str] = set()
        windows = config.windows
        self.window_seconds = {"short": windows.short_seconds, "long": windows.long_seconds}
        self.fast_window_seconds = config.drift.fast_window_seconds
        self.sequential = config.drift.sequential.enabled

    def models(self) -> list[str]:
        return sorted(set(self.config.models) | set(self.store.models()))

    def read_model(self, model: str, now_ms: int) -> ModelWindows:
        lengths_ms = [int(seconds * 1000) for seconds in self.window_seconds.values()]
        if self.fast_window_seconds:
            lengths_ms.append(self.fast_window_seconds * 1000)
        fields = self.store.read_windows(model, lengths_ms, now_ms)
        fast = summarise(fields.pop()) if self.fast_window_seconds else None
        return ModelWindows(
            model=model,
            now_ms=now_ms,
            windows={
                name: summarise(window)
                for name, window in zip(self.window_seconds, fields, strict=True)
            },
            window_seconds=self.window_seconds,
            fast=fast,
            sequential=self.store.sequential_alarms(model) if self.sequential else {},
        )

    def tick(self) -> Snapshot:
        started = time.perf_counter()
        now_ms = self.clock_ms()
        snapshot = Snapshot(taken_at_ms=now_ms)
        models = self.models()
        for model in models:
            # A model's figures go in whole or not at all: a contributor may fail half-way.
            figures = Snapshot(taken_at_ms=now_ms)
            if self._guarded(f"model:{model}", self._model_figures, model, now_ms, figures):
                snapshot.samples += figures.samples
        self._guarded("bad_events", self._bad_events, snapshot)
        if self.lag_reader is not None:
            self._guarded("consumer_lag", self._consumer_lag, self.lag_reader, snapshot)
        snapshot.add(names.MODELS, (), len(models))
        for hook in self.hooks:
            self._guarded(type(hook).__name__, hook.after_figures, snapshot)
        for part, count in sorted(self.errors.items()):
            snapshot.add(names.EVALUATOR_ERRORS_TOTAL, (part,), count)
        dropped = _cap_series(snapshot, self.config.evaluator.max_series)
        snapshot.add(names.SERIES_DROPPED, (), dropped)
        self.ticks += 1
        snapshot.add(names.TICKS_TOTAL, (), self.ticks)
        snapshot.add(names.TICK_DURATION, (), time.perf_counter() - started)
        snapshot.add(names.LAST_TICK, (), time.time())
        snapshot.add(names.EVALUATOR_LEADER, (), 1)
        self.collector.publish(snapshot)
        return snapshot

    def _guarded(self, part: str, step: Callable[..., None], *arguments: object) -> bool:
        """Run one part of the tick; if it fails (and failures are left out), log and count it
        and return False. The traceback is logged when a part starts failing, one line on each
        tick after that."""
        try:
            step(*arguments)
        except Exception as error:
            if not self.leave_out_failures:
                raise
            self.errors[part] += 1
            log.error(
                "%s: left out of this tick: %s", part, error, exc_info=part not in self._failing
            )
            self._failing.add(part)
            return False
        self._failing.discard(part)
        return True

    def _model_figures(self, model: str, now_ms: int, figures: Snapshot) -> None:
        windows = self.read_model(model, now_ms)
        for contributor in self.contributors:
            contributor.contribute(windows, figures)
        self._lifetime(model, now_ms, figures)

    def _bad_events(self, snapshot: Snapshot) -> None:
        for name, count in self.store.totals(INVALID_EVENTS_MODEL).items():
            if name.startswith(BAD_EVENTS_FIELD):
                snapshot.add(names.BAD_EVENTS_TOTAL, (name[len(BAD_EVENTS_FIELD) :],), count)

    @staticmethod
    def _consumer_lag(reader: ConsumerLagReader, snapshot: Snapshot) -> None:
        for (topic, partition), lag in sorted(reader.read().items()):
            snapshot.add(names.CONSUMER_LAG, (reader.group, topic, str(partition)), lag)

    def _lifetime(self, model: str, now_ms: int, snapshot: Snapshot) -> None:
        for name, count in self.store.totals(model).items():
            series, metric = split_field(name)
            if metric == Metric.EVENTS:
                snapshot.add(names.EVENTS_TOTAL, (model, *series), count)
            elif metric == Metric.LATE_EVENTS:
                snapshot.add(names.LATE_EVENTS_TOTAL, (model, *series), count)
        newest = self.store.newest_event_ms(model)
        freshness = math.nan if newest is None else max(0.0, (now_ms - newest) / 1000)
        snapshot.add(names.FRESHNESS, (model,), freshness)

    def run(self, stop: threading.Event) -> None:
        """Tick every ``tick_seconds`` until ``stop``; with a lease, only while holding it.

        A standby publishes only ``driftline_evaluator_leader 0`` (so Prometheus never sees two
        sets of figures, nor alerts twice). On becoming active, hooks that keep state
        (``take_over``) resume what the previous active evaluator left in Redis.
        """
        interval = self.config.evaluator.tick_seconds
        active = False
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    was_active, active = active, self.lease is None or self.lease.hold()
                    if active and not was_active and self.lease is not None:
                        log.info("evaluator lease taken: this evaluator is now active")
                        for hook in self.hooks:
                            if isinstance(hook, TakeOverHook):
                                hook.take_over(self.clock_ms())
                    if active:
                        self.tick()
                    else:
                        self._standby_tick()
                except Exception:  # a failed tick must not end monitoring; the next one retries
                    log.exception("evaluator tick failed")
                stop.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            if self.lease is not None:
                self.lease.release()

    def _standby_tick(self) -> None:
        snapshot = Snapshot(taken_at_ms=self.clock_ms())
        snapshot.add(names.EVALUATOR_LEADER, (), 0)
        snapshot.add(names.LAST_TICK, (), time.time())
        self.collector.publish(snapshot)


def _cap_series(snapshot: Snapshot, max_series: int) -> int:
    """Keep at most ``max_series`` label sets per metric; return how many were dropped.

    Whole-traffic series (no segment) are kept first, so a flood of segment values cannot push
    a model's headline figures out of ``/metrics``.
    """
    kept_per_metric: dict[str, int] = {}
    kept = []
    dropped = 0
    ordered = sorted(
        snapshot.samples,
        key=lambda s: "segment" in s.metric.labels and s.labels[3] != "",
    )
    for sample in ordered:
        count = kept_per_metric.get(sample.metric.name, 0)
        if count >= max_series:
            dropped += 1
            continue
        kept_per_metric[sample.metric.name] = count + 1
        kept.append(sample)
    snapshot.samples = kept
    return dropped
