"""From raw Kafka message values to per-model column batches, shared by every runtime.

:class:`BatchAssembler` decodes a batch of message values, refuses the invalid ones with a reason,
groups the valid ones by model, caps the bounded dimensions (models, versions, segment values) and
returns :class:`detectors.window_update.ModelBatch` columns ready for binning. The confluent-kafka
consumer, the Faust agent and ``backtest`` all go through here, so they cannot disagree about what
an event counts as.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from detectors.prediction_record import PredictionColumns, predicted_classes
from detectors.series import OVERFLOW_VALUE, Series, segment_name
from detectors.window_store import WindowStore
from detectors.window_update import FeatureBinner, ModelBatch
from driftline.config import Config
from driftline.events import (
    FeatureValues,
    InferenceEvent,
    InvalidEvent,
    InvalidReason,
    decode_event,
    decode_features,
    timestamp_ms,
)

__all__ = ["AssembledBatch", "BatchAssembler", "RefusedMessage"]

VERSIONS = "versions"
_PAIR = attrgetter("version", "deployment")


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
                (event.ts if type(event.ts) is int else timestamp_ms(event.ts) for event in events),
                dtype=np.int64,
                count=len(events),
            )
            refusals: dict[int, InvalidEvent] = {}
            for position in np.flatnonzero(times > latest_accepted_ms).tolist():
                detail = f"ts {int(times[position])} is ahead of the consumer clock {now_ms}"
                refusals[position] = InvalidEvent(InvalidReason.FUTURE_TIMESTAMP, detail)
            features: list[FeatureValues] | None = None
            if self.feature_binner_for(model) is not None:
                features = []
                for position, event in enumerate(events):
                    parsed = decode_features(event.features)
                    if isinstance(parsed, InvalidEvent):
                        refusals.setdefault(position, parsed)
                        parsed = {}
                    features.append(parsed)
            if refusals:
                batch.refused += [RefusedMessage(indices[p], why) for p, why in refusals.items()]
                keep = [p for p in range(len(events)) if p not in refusals]
                indices = [indices[p] for p in keep]
                events = [events[p] for p in keep]
                times = times[keep]
                features = None if features is None else [features[p] for p in keep]
            if events:
                batch.models[model] = self._columns(
                    model,
                    events,
                    times,
                    [partitions[i] for i in indices],
                    [offsets[i] for i in indices],
                    features,
                )
        batch.refused.sort(key=lambda refused: refused.index)
        return batch

    def _columns(
        self,
        model: str,
        events: list[InferenceEvent],
        times: npt.NDArray[np.int64],
        partitions: list[int],
        offsets: list[int],
        features: list[FeatureValues] | None,
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

        # Per event only a tuple and a dict lookup; Series objects are made per distinct pair.
        pair_codes: dict[tuple[str, str], int] = {}
        codes = [pair_codes.setdefault(pair, len(pair_codes)) for pair in map(_PAIR, events)]
        versions = self._admit(
            model,
            VERSIONS,
            {version for version, _ in pair_codes},
            self.config.monitoring.max_versions_per_model,
        )
        series_of_code = np.array(
            [
                index_of(Series(version if versions[version] else OVERFLOW_VALUE, deployment))
                for version, deployment in pair_codes
            ],
            dtype=np.int64,
        )
        base = series_of_code[np.asarray(codes, dtype=np.int64)]
        row_event = [np.arange(count, dtype=np.int64)]
        row_series = [base]
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

        return ModelBatch(
            model=model,
            partitions=np.asarray(partitions, dtype=np.int32),
            offsets=np.asarray(offsets, dtype=np.int64),
            timestamps_ms=times,
            latency_ms=np.fromiter(
                (math.nan if e.latency_ms is None else e.latency_ms for e in events),
                np.float64,
                count,
            ),
            confidence=np.fromiter(
                (math.nan if e.confidence is None else e.confidence for e in events),
                np.float64,
                count,
            ),
            errors=np.fromiter((bool(event.error) for event in events), np.bool_, count),
            series=series,
            row_event=np.concatenate(row_event),
            row_series=np.concatenate(row_series),
            features=features or [],
            predictions=[event.prediction for event in events] if features is not None else [],
            prediction_columns=self._prediction_columns(model, events),
        )

    def _prediction_columns(
        self, model: str, events: list[InferenceEvent]
    ) -> PredictionColumns | None:
        """What labels will be joined with and judged against (labelled models), and what the
        rollout gate joins shadow and stable answers by (models whose rollout policy checks
        agreement: their predictions stay on record for the long window)."""
        labels = self.config.model(model).labels
        policy = self.config.rollout.models.get(model)
        pairing = policy is not None and any(c.figure == "agreement" for c in policy.checks)
        if labels is None and not pairing:
            return None
        windows = self.config.windows
        pairing_ms = (windows.long_seconds + windows.rollup_seconds) * 1000 if pairing else 0
        predictions = [event.prediction for event in events]
        recorded = pairing or (labels is not None and labels.join)
        return PredictionColumns(
            event_ids=[event.event_id for event in events] if recorded else [],
            predictions=predictions,
            predicted=(
                {} if labels is None else predicted_classes(predictions, labels.positive_classes)
            ),
            record_ms=max(0 if labels is None else labels.record_ms, pairing_ms),
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
