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
EVALUATOR_ERRORS_TOTAL = _metric(
    "driftline_evaluator_errors_total",
    "counter",
    "Parts of evaluator ticks left out because they failed, by part: model:<name> (its stored"
    " state is unreadable), bad_events, consumer_lag, or a hook (AlertingStep, ...); see the log.",
    ("part",),
)
SERIES_DROPPED = _metric(
    "driftline_metrics_series_dropped",
    "gauge",
    "Series left out of /metrics in the last tick because of the series cap.",
    (),
)
MODELS = _metric("driftline_models", "gauge", "Models monitored.", ())
EVALUATOR_LEADER = _metric(
    "driftline_evaluator_leader",
    "gauge",
    "1 on the active evaluator (it holds the lease), 0 on a standby.",
    (),
)
ALERT_LABELS = ("rule", "model", "version", "deployment", "segment", "feature")
ALERT_STATE = _metric(
    "driftline_alert_state",
    "gauge",
    "1 for the current state of each alert of the built-in rule engine "
    "(inactive, pending, firing, resolved, nodata).",
    (*ALERT_LABELS, "state"),
)
ALERT_VALUE = _metric(
    "driftline_alert_value",
    "gauge",
    "The value each built-in rule compared with its threshold, per window.",
    (*ALERT_LABELS, "window"),
)
ROLLBACK_DECISIONS_TOTAL = _metric(
    "driftline_rollback_decisions_total",
    "counter",
    "Rollback decisions by outcome (executed, dry_run, failed, declined_<reason>), all processes.",
    ("model", "rule", "decision"),
)
WEBHOOK_ALERTS_TOTAL = _metric(
    "driftline_webhook_alerts_total",
    "counter",
    "Alerts the Alertmanager webhook receiver accepted, by outcome, all receivers.",
    ("outcome",),
)
WEBHOOK_REQUESTS_REFUSED_TOTAL = _metric(
    "driftline_webhook_requests_refused_total",
    "counter",
    "Requests the Alertmanager webhook receiver refused, by HTTP status (401: wrong credentials,"
    " so rollback alerts are not reaching it), all receivers.",
    ("status",),
)
NOTIFICATIONS_FAILED_TOTAL = _metric(
    "driftline_alert_notifications_failed_total",
    "counter",
    "Alert notifications the built-in engine could not deliver, by notifier.",
    ("notifier",),
)
DRIFT_LABELS = (*WINDOW_LABELS, "feature")
"""Drift figures are per window and per reference item: each feature, ``@prediction``,
``@confidence``. Items come from the model's reference, so the feature label stays bounded. Their
``window`` label also takes ``fast``: the drift fast window (``drift.fast_window_seconds``)."""
DRIFT_SCORE = _metric(
    "driftline_drift_score",
    "gauge",
    "Distance between the window and the reference, by statistic (psi, jensen_shannon, "
    "hellinger, kolmogorov_smirnov, wasserstein in reference standard deviations).",
    (*DRIFT_LABELS, "stat"),
)
DRIFT_P_VALUE = _metric(
    "driftline_drift_p_value",
    "gauge",
    "Chi-square p-value of the window against the reference (before Benjamini-Hochberg).",
    DRIFT_LABELS,
)
DRIFT_SAMPLES = _metric(
    "driftline_drift_samples",
    "gauge",
    "Events in the window binned with the current reference, per feature (windows: fast, "
    "short, long).",
    DRIFT_LABELS,
)
DRIFTED = _metric(
    "driftline_drifted",
    "gauge",
    "1 when the drift policy (or a sequential alarm within its hold) says the feature drifted, "
    "0 when not; absent with too few samples.",
    (*SERIES_LABELS, "feature"),
)
SEQUENTIAL_ALARMS_TOTAL = _metric(
    "driftline_drift_sequential_alarms_total",
    "counter",
    "Alarms of the per-value sequential test (whole traffic only: segment is empty).",
    (*SERIES_LABELS, "feature"),
)
SEQUENTIAL_EPISODES_TOTAL = _metric(
    "driftline_drift_sequential_episodes_total",
    "counter",
    "Episodes of the sequential test's alarms: alarms within drift.sequential.hold_seconds of "
    "the one before are one episode, one report of drift. This is what its false-alarm budget "
    "counts (a false alarm and the alarm that corrects it are one episode).",
    (*SERIES_LABELS, "feature"),
)
SEQUENTIAL_SHIFT = _metric(
    "driftline_drift_sequential_shift_sd",
    "gauge",
    "While a sequential alarm holds the feature drifted: how far its episode's alarms moved the "
    "feature's running mean, in standard deviations of its normal scores (signed; about 0 for a "
    "false alarm and the alarm that corrected it).",
    (*SERIES_LABELS, "feature"),
)
DRIFT_SHARE = _metric(
    "driftline_drift_share_ratio",
    "gauge",
    "Share of the features with enough samples that drifted.",
    SERIES_LABELS,
)
REFERENCE_PRESENT = _metric(
    "driftline_reference_present",
    "gauge",
    "1 when the model has a drift reference, 0 when it is monitored without one.",
    ("model",),
)
REFERENCE_AGE = _metric(
    "driftline_reference_age_seconds",
    "gauge",
    "Age of the model's reference (evaluator clock minus the reference's creation time).",
    ("model",),
)
REFERENCE_INFO = _metric(
    "driftline_reference_info",
    "gauge",
    "Always 1; labels name the model's current reference and the version it was frozen from.",
    ("model", "reference_id", "version"),
)
DRIFT_METRICS: tuple[MetricName, ...] = (
    DRIFT_SCORE,
    DRIFT_P_VALUE,
    DRIFT_SAMPLES,
    DRIFTED,
    SEQUENTIAL_ALARMS_TOTAL,
    SEQUENTIAL_EPISODES_TOTAL,
    SEQUENTIAL_SHIFT,
    DRIFT_SHARE,
    REFERENCE_PRESENT,
    REFERENCE_AGE,
    REFERENCE_INFO,
)

# --- Model quality (labels, label-free estimates, versions side by side, segments) -------------
# ``class`` is a configured positive class (``models.<m>.labels.positive_classes``); ``bound`` is
# ``lower`` or ``upper`` of a Wilson 95 % interval; ``segment`` on the disparity metrics is the
# segment ``attribute=value`` whose figure is compared with the best-served value of the attribute.
QUALITY_LABELS = (*WINDOW_LABELS, "class")
LABELS_TOTAL = _metric(
    "driftline_labels_total",
    "counter",
    "Labels counted in the quality figures (joined with their prediction), ever.",
    SERIES_LABELS,
)
LABELS_REFUSED_TOTAL = _metric(
    "driftline_labels_refused_total",
    "counter",
    "Labels not counted, by reason (model is empty when no model could be told).",
    ("model", "reason"),
)
WINDOW_LABELS_COUNT = _metric(
    "driftline_window_labels",
    "gauge",
    "Labelled predictions in the window (labels land in the bucket of their prediction).",
    WINDOW_LABELS,
)
LABEL_COVERAGE = _metric(
    "driftline_label_coverage_ratio",
    "gauge",
    "Labelled predictions over predictions made in the window.",
    WINDOW_LABELS,
)
LABEL_DELAY = _metric(
    "driftline_label_delay_seconds",
    "gauge",
    "Time from prediction to label, quantile over the window's labels (relative error <= 2 %).",
    (*WINDOW_LABELS, "quantile"),
)
QUALITY_NODATA = _metric(
    "driftline_quality_nodata",
    "gauge",
    "1 when the window has fewer labels than quality.minimum_labelled (its figures are absent).",
    WINDOW_LABELS,
)
ACCURACY = _metric(
    "driftline_accuracy_ratio",
    "gauge",
    "Share of labelled predictions that were right.",
    WINDOW_LABELS,
)
ACCURACY_INTERVAL = _metric(
    "driftline_accuracy_interval_ratio",
    "gauge",
    "Wilson 95 % interval bound of the accuracy.",
    (*WINDOW_LABELS, "bound"),
)
PRECISION = _metric(
    "driftline_precision_ratio", "gauge", "Precision of the positive class.", QUALITY_LABELS
)
PRECISION_INTERVAL = _metric(
    "driftline_precision_interval_ratio",
    "gauge",
    "Wilson 95 % interval bound of the precision.",
    (*QUALITY_LABELS, "bound"),
)
RECALL = _metric("driftline_recall_ratio", "gauge", "Recall of the positive class.", QUALITY_LABELS)
RECALL_INTERVAL = _metric(
    "driftline_recall_interval_ratio",
    "gauge",
    "Wilson 95 % interval bound of the recall.",
    (*QUALITY_LABELS, "bound"),
)
F1 = _metric("driftline_f1_ratio", "gauge", "F1 score of the positive class.", QUALITY_LABELS)
MEAN_ABSOLUTE_ERROR = _metric(
    "driftline_mean_absolute_error",
    "gauge",
    "Regression: mean absolute error of labelled predictions, in the label's unit.",
    WINDOW_LABELS,
)
ROOT_MEAN_SQUARED_ERROR = _metric(
    "driftline_root_mean_squared_error",
    "gauge",
    "Regression: root mean squared error of labelled predictions, in the label's unit.",
    WINDOW_LABELS,
)
ESTIMATED_ACCURACY = _metric(
    "driftline_estimated_accuracy_ratio",
    "gauge",
    "Accuracy estimated from confidence alone (calibrated on the quality reference), all "
    "predictions of the window.",
    WINDOW_LABELS,
)
ESTIMATED_PRECISION = _metric(
    "driftline_estimated_precision_ratio",
    "gauge",
    "Precision of the positive class estimated from confidence alone.",
    QUALITY_LABELS,
)
POSITIVE_PREDICTION = _metric(
    "driftline_positive_prediction_ratio",
    "gauge",
    "Share of predictions that are the positive class.",
    QUALITY_LABELS,
)
COMPARISON_LABELS = ("model", "version", "deployment", "window", "figure", "class")
CANARY_DIFFERENCE = _metric(
    "driftline_canary_difference",
    "gauge",
    "Canary or shadow version minus stable, same window: error_ratio, latency_p99_seconds, "
    "low_confidence_ratio, accuracy, precision, recall.",
    COMPARISON_LABELS,
)
CANARY_P_VALUE = _metric(
    "driftline_canary_p_value",
    "gauge",
    "Two-sided p-value of the two-proportion z-test of that difference (absent for latency).",
    COMPARISON_LABELS,
)
SEGMENT_SHARE = _metric(
    "driftline_segment_share_ratio",
    "gauge",
    "The segment's share of its version's traffic.",
    WINDOW_LABELS,
)
SEGMENT_SHARE_DIFFERENCE = _metric(
    "driftline_segment_share_difference",
    "gauge",
    "The segment's share minus its share in the quality reference (representation drift).",
    WINDOW_LABELS,
)
DISPARITY_LABELS = (*WINDOW_LABELS, "figure", "class")
DISPARITY_RATIO = _metric(
    "driftline_disparity_ratio",
    "gauge",
    "Segment's figure over the best-served value of its attribute (1 = best served; below 0.8 "
    "fails the four-fifths rule). Error ratio compares success shares (1 - error ratio).",
    DISPARITY_LABELS,
)
DISPARITY_DIFFERENCE = _metric(
    "driftline_disparity_difference",
    "gauge",
    "Segment's figure minus the best-served value of its attribute.",
    DISPARITY_LABELS,
)
DISPARITY_NODATA = _metric(
    "driftline_disparity_nodata",
    "gauge",
    "1 when the segment has too few events or labels for the figure (ratio and difference absent).",
    DISPARITY_LABELS,
)
QUALITY_METRICS: tuple[MetricName, ...] = (
    LABELS_TOTAL,
    LABELS_REFUSED_TOTAL,
    WINDOW_LABELS_COUNT,
    LABEL_COVERAGE,
    LABEL_DELAY,
    QUALITY_NODATA,
    ACCURACY,
    ACCURACY_INTERVAL,
    PRECISION,
    PRECISION_INTERVAL,
    RECALL,
    RECALL_INTERVAL,
    F1,
    MEAN_ABSOLUTE_ERROR,
    ROOT_MEAN_SQUARED_ERROR,
    ESTIMATED_ACCURACY,
    ESTIMATED_PRECISION,
    POSITIVE_PREDICTION,
    CANARY_DIFFERENCE,
    CANARY_P_VALUE,
    SEGMENT_SHARE,
    SEGMENT_SHARE_DIFFERENCE,
    DISPARITY_RATIO,
    DISPARITY_DIFFERENCE,
    DISPARITY_NODATA,
)


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
    EVALUATOR_ERRORS_TOTAL,
    SERIES_DROPPED,
    MODELS,
    EVALUATOR_LEADER,
    *DRIFT_METRICS,
    ALERT_STATE,
    ALERT_VALUE,
    ROLLBACK_DECISIONS_TOTAL,
    WEBHOOK_ALERTS_TOTAL,
    WEBHOOK_REQUESTS_REFUSED_TOTAL,
    NOTIFICATIONS_FAILED_TOTAL,
    *QUALITY_METRICS,
)
