"""Crossings of the configured quality thresholds (``quality.thresholds``), as transitions.

:class:`QualityThresholdWatcher` is a tick hook: after each tick it compares every sample of each
threshold's figure (all series of the matching model, the threshold's window and class) with the
line and reports a :class:`QualityTransition` when a series crosses it (``crossed``) or comes back
(``ok``). A series starts ``ok``; a tick without the figure (nodata) changes nothing.
``driftline backtest --labels`` prints the transitions as ``{"kind": "quality", ...}`` lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from alerting import metric_names as names
from alerting.snapshot import Snapshot
from driftline.quality_config import QualityFigure, QualityThreshold

__all__ = ["FIGURE_METRICS", "QualityThresholdWatcher", "QualityTransition"]

FIGURE_METRICS: dict[QualityFigure, names.MetricName] = {
    "accuracy": names.ACCURACY,
    "precision": names.PRECISION,
    "recall": names.RECALL,
    "f1": names.F1,
    "label_coverage": names.LABEL_COVERAGE,
    "estimated_accuracy": names.ESTIMATED_ACCURACY,
    "estimated_precision": names.ESTIMATED_PRECISION,
    "mean_absolute_error": names.MEAN_ABSOLUTE_ERROR,
    "root_mean_squared_error": names.ROOT_MEAN_SQUARED_ERROR,
}


@dataclass(frozen=True)
class QualityTransition:
    model: str
    version: str
    deployment: str
    segment: str
    figure: str
    label_class: str
    window: str
    state: str
    at_ms: int
    value: float
    threshold: QualityThreshold

    def to_json(self) -> str:
        line = {
            "kind": "quality",
            "model": self.model,
            "version": self.version,
            "deployment": self.deployment,
            "segment": self.segment,
            "figure": self.figure,
            "class": self.label_class,
            "window": self.window,
            "state": self.state,
            "at": self.at_ms,
            "value": self.value,
        }
        if self.threshold.below is not None:
            line["below"] = self.threshold.below
        else:
            line["above"] = self.threshold.above
        return json.dumps(line)


class QualityThresholdWatcher:
    def __init__(
        self,
        thresholds: list[QualityThreshold],
        on_transition: Callable[[QualityTransition], object],
    ) -> None:
        self.thresholds = thresholds
        self.on_transition = on_transition
        self._crossed: set[tuple[int, tuple[str, ...]]] = set()

    def after_figures(self, snapshot: Snapshot) -> None:
        for number, threshold in enumerate(self.thresholds):
            metric = FIGURE_METRICS[threshold.figure]
            for sample in sorted(
                (s for s in snapshot.samples if s.metric == metric), key=lambda s: s.labels
            ):
                labels = dict(zip(metric.labels, sample.labels, strict=True))
                if labels["window"] != threshold.window or math.isnan(sample.value):
                    continue
                if threshold.model is not None and labels["model"] != threshold.model:
                    continue
                if labels.get("class") != threshold.positive_class:
                    continue
                key = (number, sample.labels)
                crossed = threshold.crossed(sample.value)
                if crossed == (key in self._crossed):
                    continue
                if crossed:
                    self._crossed.add(key)
                else:
                    self._crossed.discard(key)
                self.on_transition(
                    QualityTransition(
                        model=labels["model"],
                        version=labels["version"],
                        deployment=labels["deployment"],
                        segment=labels["segment"],
                        figure=threshold.figure,
                        label_class=labels.get("class", ""),
                        window=threshold.window,
                        state="crossed" if crossed else "ok",
                        at_ms=snapshot.taken_at_ms,
                        value=sample.value,
                        threshold=threshold,
                    )
                )
