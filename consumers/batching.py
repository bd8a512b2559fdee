"""From raw Kafka message values to per-model column batches, shared by every runtime.

:class:`BatchAssembler` decodes a batch of message values, refuses the invalid ones with a reason,
groups the valid ones by model, caps the bounded dimensions (models, versions, segment values) and
returns :class:`detectors.window_update.ModelBatch` columns ready for binning. The confluent-kafka
consumer, the Faust agent and ``backtest`` all go through here, so they cannot disagree about what
an event counts as.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.series import OVERFLOW_VALUE, Series, segment_name
from detectors.window_store import WindowStore
from detectors.window_update import FeatureBinner, ModelBatch
from driftline.config import Config
from driftline.events import (
    InferenceEvent,
    InvalidEvent,
    InvalidReason,
    decode_event,
    timestamp_ms,
)

__all__ = ["AssembledBatch", "BatchAssembler", "RefusedMessage"]

VERSIONS = "versions"


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A message that goes to the dead-letter topic: its position in the batch and why."""

    index: int
    invalid: InvalidEvent


@dataclass
class AssembledBatch:
    models: dict[str, ModelBatch] = field(default_factory=dict)
    refused: list[RefusedMessage] = field(default_factory=list)


class BatchAssembler:
    """Decodes and groups batches for one process; caches what the store has admitted."""

    def __init__(
        self,
        config: Config,
        store: WindowStore,
        feature_binner_for: Callable[[str], FeatureBinner | None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.feature_binner_for = feature_binner_for or (lambda model: None)
        # Admission is permanent, so both answers can be cached for the life of the process.
        self._admitted: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)

    def assemble(
        self,
        partitions: Sequence[int],
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        now_ms: int,
    ) -> AssembledBatch:
        limits = self.config.consumer
        batch = AssembledBatch()
        by_model: dict[str, list[int]] = defaultdict(list)
        decoded: list[InferenceEvent] = []
        for index, value in enumerate(values):
            event = decode_event(value, limits.max_event_bytes)
            if isinstance(event, InvalidEvent):
                batch.refused.append(RefusedMessage(index, event))
                decoded.append(None)  # type: ignore[arg-type]  # placeholder keeps indices aligned
                continue
            decoded.append(event)
            by_model[event.model].append(index)

        admitted_models = self._admit_models(list(by_model))
        latest_accepted_ms = now_ms + limits.future_tolerance_seconds * 1000
        for model, indices in by_model.items():
            if not admitted_models[model]:
                detail = f"model {model!r} is not configured and the model cap is reached"
                batch.refused += [
                    RefusedMessage(i, InvalidEvent(InvalidReason.UNKNOWN_MODEL, detail))
                    for i in indices
                ]
                continue
            events = [decoded[i] for i in indices]
            times = np.fromiter(
                (timestamp_ms(event.ts) for event in events), dtype=np.int64, count=len(events)
            )
            future = times > latest_accepted_ms
            if future.any():
                for position in np.flatnonzero(future).tolist():
                    detail = f"ts {int(times[position])} is ahead of the consumer clock {now_ms}"
                    invalid = InvalidEvent(InvalidReason.FUTURE_TIMESTAMP, detail)
                    batch.refused.append(RefusedMessage(indices[position], invalid))
                keep = np.flatnonzero(~future).tolist()
                indices = [indices[p] for p in keep]
                events = [events[p] for p in keep]
                times = times[~future]
            if events:
                batch.models[model] = self._columns(
                    model,
                    events,
                    times,
                    [partitions[i] for i in indices],
                    [offsets[i] for i in indices],
                )
        batch.refused.sort(key=lambda refused: refused.index)
        return batch

    def _columns(
        self,
        model: str,
        events: list[InferenceEvent],
        times: np.ndarray,
        partitions: list[int],
        offsets: list[int],
    ) -> ModelBatch:
        count = len(events)
        series: list[Series] = []
        series_index: dict[Series, int] = {}

        def index_of(key: Series) -> int:
            found = series_index.get(key)
            if found is None:
                found = series_index[key] = len(series)
                series.append(key)
            return found

        versions = self._admit(
            model,
            VERSIONS,
            {event.version for event in events},
            self.config.monitoring.max_versions_per_model,
        )
        base = [
            index_of(
                Series(
                    event.version if versions[event.version] else OVERFLOW_VALUE, event.deployment
                )
            )
            for event in events
        ]
        row_event = [np.arange(count, dtype=np.int64)]
        row_series = [np.asarray(base, dtype=np.int64)]
        for attribute in self.config.model(model).segments:
            present = [
                (i, event.segment[attribute])
                for i, event in enumerate(events)
                if attribute in event.segment
            ]
            if not present:
                continue
            admitted = self._admit(
                model,
                f"segment:{attribute}",
                {value for _, value in present},
                self.config.monitoring.max_segment_values,
            )
            row_event.append(np.fromiter((i for i, _ in present), np.int64, len(present)))
            segment_series = (
                Series(
                    series[base[i]].version,
                    series[base[i]].deployment,
                    segment_name(attribute, value if admitted[value] else OVERFLOW_VALUE),
                )
                for i, value in present
            )
            row_series.append(
                np.fromiter((index_of(key) for key in segment_series), np.int64, len(present))
            )

        watched = self.feature_binner_for(model) is not None
        return ModelBatch(
            model=model,
            partitions=np.asarray(partitions, dtype=np.int32),
            offsets=np.asarray(offsets, dtype=np.int64),
            timestamps_ms=times.astype(np.int64),
            latency_ms=np.array([event.latency_ms for event in events], dtype=np.float64),
            confidence=np.array([event.confidence for event in events], dtype=np.float64),
            errors=np.fromiter(
                (bool(event.error) for event in events), dtype=np.bool_, count=count
            ),
            series=series,
            row_event=np.concatenate(row_event),
            row_series=np.concatenate(row_series),
            features=[event.features for event in events] if watched else [],
            predictions=[event.prediction for event in events] if watched else [],
        )

    def _admit_models(self, models: list[str]) -> dict[str, bool]:
        """Configured models are always admitted; others while the model cap allows."""
        cache = self._admitted[("", "models")]
        unknown = [model for model in models if model not in cache]
        configured = [model for model in unknown if model in self.config.models]
        others = [model for model in unknown if model not in self.config.models]
        monitoring = self.config.monitoring
        if configured:
            self.store.admit_models(configured, monitoring.max_models + len(self.config.models))
            cache.update(dict.fromkeys(configured, True))
        if others:
            if monitoring.accept_unknown_models:
                answers = self.store.admit_models(others, monitoring.max_models)
            else:
                answers = [False] * len(others)
            cache.update(zip(others, answers, strict=True))
        return {model: cache[model] for model in models}

    def _admit(self, model: str, dimension: str, values: set[str], cap: int) -> dict[str, bool]:
        cache = self._admitted[(model, dimension)]
        unknown = sorted(value for value in values if value not in cache)
        if unknown:
            answers = self.store.admit(model, dimension, unknown, cap)
            cache.update(zip(unknown, answers, strict=True))
        return cache
