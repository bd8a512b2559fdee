"""The catalogue of every metric driftline exports: one place for names, help and labels.

Names follow Prometheus conventions: the ``driftline_`` prefix, the unit in the name (``_seconds``,
``_ratio``), ``_total`` on counters. Labels come from a bounded set.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "SERIES_LABELS", "WINDOW_LABELS", "MetricName"]

SERIES_LABELS = ("model", "version", "deployment", "segment")
WINDOW_LABELS = (*SERIES_LABELS, "window")


@dataclass(frozen=True)
class MetricName:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    labels: tuple[str, ...]


def _metric(name: str, kind: str, help_text: str, labels: tuple[str, ...]) -> MetricName:
    return MetricName(name, kind, help_text, labels)


EVENTS_TOTAL = _metric(
    "driftline_events_total", "counter", "Events applied to the windows, ever.", SERIES_LABELS
)
LATE_EVENTS_TOTAL = _metric(
    "driftline_late_events_total",
    "counter",
    "Events too old for any window: counted in events_total, not in windows.",
    SERIES_LABELS,
)
BAD_EVENTS_TOTAL = _metric(
    "driftline_bad_events_total",
    "counter",
    "Messages refused and dead-lettered, by reason.",
    ("reason",),
)
WINDOW_EVENTS = _metric(
    "driftline_window_events", "gauge", "Events in the sliding window.", WINDOW_LABELS
)
THROUGHPUT = _metric(
    "driftline_throughput_events_per_second",
    "gauge",
    "Events per second of event time over the window.",
    WINDOW_LABELS,
)
LATENCY = _metric(
    "driftline_latency_seconds",
    "gauge",
    "Model inference latency quantile over the window (relative error <= 1 %).",
    (*WINDOW_LABELS, "quantile"),
)
ERROR_RATIO = _metric(
    "driftline_error_ratio", "gauge", "Share of events flagged as errors.", WINDOW_LABELS
)
CONFIDENCE_MEAN = _metric(
    "driftline_confidence_mean_ratio", "gauge", "Mean model confidence.", WINDOW_LABELS
)
LOW_CONFIDENCE_RATIO = _metric(
    "driftline_low_confidence_ratio",
    "gauge",
    "Share of events whose confidence is below the configured threshold.",
    WINDOW_LABELS,
)
FRESHNESS = _metric(
    "driftline_freshness_seconds",
    "gauge",
    "Age of the newest event applied for the model (evaluator clock minus event time).",
    ("model",),
)
CONSUMER_LAG = _metric(
    "driftline_consumer_lag_messages",
    "gauge",
    "Messages in the partition not yet committed by the consumer group.",
    ("group", "topic", "partition"),
)
TICK_DURATION = _metric(
    "driftline_evaluator_tick_duration_seconds",
    "gauge",
    "Wall time of the last evaluator tick.",
    (),
)
TICKS_TOTAL = _metric("driftline_evaluator_ticks_total", "counter", "Evaluator ticks.", ())
LAST_TICK = _metric(
    "driftline_evaluator_last_tick_timestamp_seconds",
    "gauge",
    "When the last evaluator tick finished (Unix time).",
    (),
)
SERIES_DROPPED = _metric(
    "driftline_metrics_series_dropped",
    "gauge",
    "Series left out of /metrics in the last tick because of the series cap.",
    (),
)
MODELS = _metric("driftline_models", "gauge", "Models monitored.", ())

CATALOGUE: tuple[MetricName, ...] = (
    EVENTS_TOTAL,
    LATE_EVENTS_TOTAL,
    BAD_EVENTS_TOTAL,
    WINDOW_EVENTS,
    THROUGHPUT,
    LATENCY,
    ERROR_RATIO,
    CONFIDENCE_MEAN,
    LOW_CONFIDENCE_RATIO,
    FRESHNESS,
    CONSUMER_LAG,
    TICK_DURATION,
    TICKS_TOTAL,
    LAST_TICK,
    SERIES_DROPPED,
    MODELS,
)
