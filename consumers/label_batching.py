"""From raw labels-topic messages to per-model label columns: decode, join, and sort out why not.

:class:`LabelAssembler` is to labels what ``consumers.batching.BatchAssembler`` is to events, and
runs once per batch:

1. Decode every message (``driftline.events.decode_label``). Undecodable ones, and labels stamped
   more than ``consumer.future_tolerance_seconds`` after their Kafka message, are refused with the
   decoding reason and go to the dead-letter topic.
2. Find each label's prediction. A label of a model configured with ``labels.join: false`` that
   carries ``model``, ``version`` and ``prediction`` needs no join: it is counted in the bucket of
   its own time (the prediction's is unknown), in the ``stable`` deployment, without segments.
   Every other label is looked up by ``event_id`` among the predictions on record
   (``detectors.prediction_record``), all of a batch in one round trip. A shadow answer to the
   same input (same event_id, deployment ``shadow``) is on record apart: the label judges each.
3. Decide each label's outcome. Without a model it is refused as ``unknown_event_id`` (no
   prediction on record: never seen, not a labelled model's, or expired after the horizon and
   grace) or ``unknown_model`` (the model has no ``labels`` section). With one it counts, or is
   refused, in that model's totals, as ``beyond_horizon`` (label later than the horizon after its
   prediction), ``missing_prediction``, ``invalid_label`` (a regression label or prediction that
   is not a number), ``error_out_of_range`` (a regression error of more than
   :data:`MAXIMUM_ERROR_UNITS` units of the model's ``error_resolution``) or ``duplicate`` (an
   earlier label of the same event counted: earlier in the batch, or marked in the store). Only
   decoding failures are dead-lettered: the others are valid messages that cannot be used,
   counted by reason, never a crash.

The store re-checks the duplicate markers atomically when it applies the counts
(``consumers.label_writer``), so two consumers counting the same event at once still count it once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.label_update import LabelBatch
from detectors.prediction_record import JoinRecord, decode_record
from detectors.reference import category_key
from detectors.series import OVERFLOW_VALUE, Series
from detectors.window_store import WindowStore
from driftline.config import Config
from driftline.events import (
    InvalidEvent,
    InvalidReason,
    LabelEvent,
    decode_label,
    is_version_name,
    timestamp_ms,
)
from driftline.quality_config import LabelKind, ModelLabelsConfig

__all__ = ["AssembledLabels", "LabelAssembler", "LabelReason", "RefusedLabel"]

UNKNOWN_EVENT_ID = "unknown_event_id"
UNKNOWN_MODEL = "unknown_model"
BEYOND_HORIZON = "beyond_horizon"
MISSING_PREDICTION = "missing_prediction"
INVALID_LABEL = "invalid_label"
ERROR_OUT_OF_RANGE = "error_out_of_range"
DUPLICATE = "duplicate"
MAXIMUM_ERROR_UNITS = 2**24
"""The largest regression error counted, in units of ``error_resolution``: the windows sum squared
errors exactly in 64-bit integers (and Redis' HINCRBY), so each may add at most 2^48, and a series'
bucket overflows only past 32,768 such errors. A model with larger errors raises its resolution."""


class LabelReason:
    """Why a decodable label was not counted (``labels_refused`` reasons besides decoding ones)."""

    UNKNOWN_EVENT_ID = UNKNOWN_EVENT_ID
    UNKNOWN_MODEL = UNKNOWN_MODEL
    BEYOND_HORIZON = BEYOND_HORIZON
    MISSING_PREDICTION = MISSING_PREDICTION
    INVALID_LABEL = INVALID_LABEL
    ERROR_OUT_OF_RANGE = ERROR_OUT_OF_RANGE
    DUPLICATE = DUPLICATE


@dataclass(frozen=True, slots=True)
class RefusedLabel:
    """A label counted under no model: its index in the batch, why, and whether it is dead-lettered
    (undecodable) or only counted."""

    index: int
    reason: str
    detail: str
    dead_letter: bool


@dataclass
class AssembledLabels:
    models: dict[str, LabelBatch] = field(default_factory=dict)
    refused: list[RefusedLabel] = field(default_factory=list)


@dataclass
class _Joined:
    """One decodable label of a known model, before the batch becomes columns."""

    index: int
    label: LabelEvent
    label_ms: int
    record: JoinRecord
    delay_known: bool
    outcome: str = ""


class LabelAssembler:
    """Decodes, joins and groups label batches for one process."""

    def __init__(self, config: Config, store: WindowStore) -> None:
        self.config = config
        self.store = store
        self._admitted_versions: dict[str, dict[str, bool]] = defaultdict(dict)

    def labels_config(self, model: str) -> ModelLabelsConfig | None:
        settings = self.config.models.get(model)
        return None if settings is None else settings.labels

    def assemble(
        self,
        partitions: Sequence[int],
        offsets: Sequence[int],
        message_ms: Sequence[int],
        values: Sequence[bytes | None],
        now_ms: int,
    ) -> AssembledLabels:
        """Steps 1 to 3 for one batch; ``message_ms``: each message's Kafka time (-1: none)."""
        assembled = AssembledLabels()
        tolerance_ms = self.config.consumer.future_tolerance_seconds * 1000
        decoded: list[tuple[int, LabelEvent, int]] = []
        for index, value in enumerate(values):
            label = decode_label(value, self.config.consumer.max_event_bytes)
            if isinstance(label, InvalidEvent):
                assembled.refused.append(RefusedLabel(index, label.reason, label.detail, True))
                continue
            # A Kafka time is the producer's to set: one past this consumer's clock (by more than
            # the tolerance) is not trusted, or a label without ts lands where no window reads,
            # and near 2^63 its record's expiry overflowed.
            arrived_ms = message_ms[index]
            if not 0 <= arrived_ms <= now_ms + tolerance_ms:
                arrived_ms = now_ms
            label_ms = arrived_ms if label.ts is None else timestamp_ms(label.ts)
            if label_ms > arrived_ms + tolerance_ms:
                detail = f"ts {label_ms} is ahead of its message's time {arrived_ms}"
                reason = InvalidReason.FUTURE_TIMESTAMP
                assembled.refused.append(RefusedLabel(index, reason, detail, True))
                continue
            decoded.append((index, label, label_ms))

        joined = self._join(decoded, assembled.refused)
        by_model: dict[str, list[_Joined]] = defaultdict(list)
        for item in joined:
            by_model[item.record.model].append(item)
        for model, items in by_model.items():
            settings = self.labels_config(model)
            assert settings is not None  # _join refused labels of unconfigured models
            self._decide(items, settings)
            assembled.models[model] = self._columns(model, items, settings, partitions, offsets)
        assembled.refused.sort(key=lambda refused: refused.index)
        return assembled

    def _join(
        self, decoded: list[tuple[int, LabelEvent, int]], refused: list[RefusedLabel]
    ) -> list[_Joined]:
        joined: list[_Joined] = []
        lookups: list[tuple[int, LabelEvent, int]] = []
        for index, label, label_ms in decoded:
            settings = None if label.model is None else self.labels_config(label.model)
            if label.model is not None and settings is None:
                detail = f"model {label.model!r} has no labels section in the config"
                refused.append(RefusedLabel(index, UNKNOWN_MODEL, detail, False))
            elif label.model is not None and settings is not None and not settings.join:
                # Carried prediction: counted at the label's time, whole traffic, stable. A
                # version no event could carry ("v|x" would split the window's field names)
                # counts as the overflow version, as one past the cap does.
                version = label.version or OVERFLOW_VALUE
                if not is_version_name(version):
                    version = OVERFLOW_VALUE
                version = self._version(label.model, version)
                carried = JoinRecord(
                    label.model, label_ms, label.prediction, None, version, "stable"
                )
                joined.append(_Joined(index, label, label_ms, carried, delay_known=False))
            else:
                lookups.append((index, label, label_ms))
        event_ids = [label.event_id for _, label, _ in lookups]
        found = self.store.prediction_records(event_ids)
        # A shadow answer to the same input is on record apart; the label judges both legs.
        shadows = self.store.shadow_prediction_records(event_ids)
        for (index, label, label_ms), raw, shadow in zip(lookups, found, shadows, strict=True):
            records = [
                record
                for record in (
                    None if raw is None else decode_record(raw),
                    None if shadow is None else decode_record(shadow),
                )
                if record is not None
            ]
            judged = [record for record in records if self.labels_config(record.model)]
            if not records:
                detail = f"no prediction on record for event_id {label.event_id!r}"
                refused.append(RefusedLabel(index, UNKNOWN_EVENT_ID, detail, False))
            elif not judged:
                detail = f"model {records[0].model!r} has no labels section in the config"
                refused.append(RefusedLabel(index, UNKNOWN_MODEL, detail, False))
            for record in judged:
                joined.append(_Joined(index, label, label_ms, record, delay_known=True))
        return joined

    def _version(self, model: str, version: str) -> str:
        cache = self._admitted_versions[model]
        if version not in cache:
            cap = self.config.monitoring.max_versions_per_model
            [cache[version]] = self.store.admit(model, "versions", [version], cap)
        return version if cache[version] else OVERFLOW_VALUE

    def _decide(self, items: list[_Joined], settings: ModelLabelsConfig) -> None:
        """Set each label's outcome; the first countable label of an event wins, by position."""
        horizon_ms = settings.horizon_seconds * 1000
        regression = settings.kind is LabelKind.REGRESSION
        too_large = MAXIMUM_ERROR_UNITS * settings.error_resolution
        for item in items:
            prediction = item.record.prediction
            if item.delay_known and item.label_ms - item.record.ts_ms > horizon_ms:
                item.outcome = BEYOND_HORIZON
            elif prediction is None:
                item.outcome = MISSING_PREDICTION
            elif regression and not (_is_number(prediction) and _is_number(item.label.label)):
                item.outcome = INVALID_LABEL
            elif regression and abs(_number(prediction) - _number(item.label.label)) > too_large:
                item.outcome = ERROR_OUT_OF_RANGE
        # One count per event and leg: a label judges the stable and the shadow answer once each.
        seen: set[tuple[str, bool]] = set()
        for item in items:
            if item.outcome:
                continue
            key = (item.label.event_id, item.record.deployment == "shadow")
            if key in seen:
                item.outcome = DUPLICATE
            seen.add(key)
        countable = [item for item in items if not item.outcome]
        model = items[0].record.model
        marked = self.store.labelled(model, [item.label.event_id for item in countable])
        for item, already in zip(countable, marked, strict=True):
            if already:
                item.outcome = DUPLICATE

    def _columns(
        self,
        model: str,
        items: list[_Joined],
        settings: ModelLabelsConfig,
        partitions: Sequence[int],
        offsets: Sequence[int],
    ) -> LabelBatch:
        count = len(items)
        series: list[Series] = []
        series_index: dict[Series, int] = {}
        row_label: list[int] = []
        row_series: list[int] = []
        for position, item in enumerate(items):
            record = item.record
            for segment in ("", *record.segments):
                key = Series(record.version, record.deployment, segment)
                found = series_index.get(key)
                if found is None:
                    found = series_index[key] = len(series)
                    series.append(key)
                row_label.append(position)
                row_series.append(found)
        regression = settings.kind is LabelKind.REGRESSION
        record_ms = (settings.horizon_seconds + settings.record_grace_seconds) * 1000
        return LabelBatch(
            model=model,
            regression=regression,
            partitions=np.fromiter((partitions[i.index] for i in items), np.int32, count),
            offsets=np.fromiter((offsets[i.index] for i in items), np.int64, count),
            event_ids=[item.label.event_id for item in items],
            outcomes=[item.outcome for item in items],
            prediction_ms=np.fromiter((i.record.ts_ms for i in items), np.int64, count),
            label_ms=np.fromiter((i.label_ms for i in items), np.int64, count),
            delay_known=np.fromiter((i.delay_known for i in items), np.bool_, count),
            predicted=[
                "" if regression else category_key(i.record.prediction) or "" for i in items
            ],
            actual=["" if regression else category_key(i.label.label) or "" for i in items],
            predicted_value=np.fromiter(
                (_number(i.record.prediction) if regression else math.nan for i in items),
                np.float64,
                count,
            ),
            actual_value=np.fromiter(
                (_number(i.label.label) if regression else math.nan for i in items),
                np.float64,
                count,
            ),
            confidence=np.fromiter(
                (math.nan if i.record.confidence is None else i.record.confidence for i in items),
                np.float64,
                count,
            ),
            series=series,
            row_label=np.asarray(row_label, dtype=np.int64),
            row_series=np.asarray(row_series, dtype=np.int64),
            # A duplicate is recognised as long as its prediction could still be joined.
            marker_expire_at_ms=np.fromiter(
                (i.record.ts_ms + record_ms for i in items), np.int64, count
            ),
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object) -> float:
    return float(value) if _is_number(value) else math.nan  # type: ignore[arg-type]
