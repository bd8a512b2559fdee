"""What the events consumer keeps of a prediction, so that a label carrying only its event_id can
be joined with it later.

For a model with a ``labels`` section, the consumer's :class:`PredictionColumns` carry each event's
id, raw prediction and, per configured positive class, whether the event predicted it.
:func:`join_records` turns a batch into one :class:`JoinRecord` per event, stored by the window
store under ``<prefix>:prediction:<event_id>`` until the event time plus the label horizon and
grace. The key has no model hash tag (a label may name nothing but the event id); the store writes
the records in the same pipeline as, and *before*, the window scripts, so a checkpoint never
covers an event whose record was not written.

>>> record = JoinRecord("fraud", 1_700_000_000_000, "fraud", 0.93, "v2", "canary", ["region=eu"])
>>> encoded = encode_record(record)
>>> encoded
b'["fraud",1700000000000,"fraud",0.93,"v2","canary",["region=eu"]]'
>>> decode_record(encoded) == record, decode_record(b"not a record")
(True, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from detectors.window_update import ModelBatch

__all__ = [
    "JoinRecord",
    "PredictionColumns",
    "decode_record",
    "encode_record",
    "join_records",
    "shadow_records",
]

BoolArray = npt.NDArray[np.bool_]


class JoinRecord(msgspec.Struct, array_like=True, frozen=True):
    """One prediction as the label join needs it: where its labels are counted, and what it said.

    ``version`` is the admitted version (or ``__overflow__``), ``segments`` the segment series
    (``attribute=value``) the event was counted under, so labels land in the same series.
    """

    model: str
    ts_ms: int
    prediction: str | float | bool | None
    confidence: float | None
    version: str
    deployment: str
    segments: list[str] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JoinRecord)


def encode_record(record: JoinRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(raw: str | bytes) -> JoinRecord | None:
    """The record, or ``None`` when the stored value is not one (never an exception)."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass
class PredictionColumns:
    """Per event of a label-configured model: id, raw prediction, and predicted positive classes.

    ``record_ms`` is how long past its event time each prediction stays on record for the join
    (0: labels carry their own prediction, nothing is recorded).
    """

    event_ids: list[str]
    predictions: list[str | float | bool | None]
    predicted: dict[str, BoolArray] = field(default_factory=dict)
    record_ms: int = 0

    def select(self, keep: BoolArray) -> PredictionColumns:
        kept = np.flatnonzero(keep).tolist()
        return PredictionColumns(
            event_ids=[self.event_ids[i] for i in kept] if self.event_ids else [],
            predictions=[self.predictions[i] for i in kept],
            predicted={name: column[keep] for name, column in self.predicted.items()},
            record_ms=self.record_ms,
        )


def predicted_classes(
    predictions: Sequence[str | float | bool | None], positive_classes: Sequence[str]
) -> dict[str, BoolArray]:
    """Per positive class, whether each prediction is that class (compared as category strings)."""
    from detectors.reference import category_key

    if not positive_classes:
        return {}
    keys = np.array([category_key(value) or "" for value in predictions], dtype=object)
    return {name: keys == name for name in positive_classes}


def join_records(batch: ModelBatch, now_ms: int) -> list[tuple[str, bytes, int]]:
    """``(event_id, encoded record, expire-at ms)`` for the batch's events still within reach.

    Shadow predictions are left out: they go to :func:`shadow_records`, so a shadow answer sent
    with the same event_id as the stable one (the same input) never overwrites it.
    """
    return [
        (event_id, record, expire_at)
        for event_id, record, expire_at, _, shadow in _records(batch, now_ms)
        if not shadow
    ]


def shadow_records(batch: ModelBatch, now_ms: int) -> list[tuple[str, bytes, int, int]]:
    """``(event_id, encoded record, expire-at ms, event ms)`` of the batch's shadow predictions:
    stored apart from the stable ones of the same event_ids, and indexed by time, so the rollout
    gate can join the two legs (``alerting.shadow_agreement``) and labels judge both."""
    return [
        (event_id, record, expire_at, ts_ms)
        for event_id, record, expire_at, ts_ms, shadow in _records(batch, now_ms)
        if shadow
    ]


def _records(batch: ModelBatch, now_ms: int) -> list[tuple[str, bytes, int, int, bool]]:
    columns = batch.prediction_columns
    if columns is None or columns.record_ms <= 0 or len(batch) == 0:
        return []
    expire_at = batch.timestamps_ms + columns.record_ms
    is_segment = np.fromiter(
        (bool(series.segment) for series in batch.series), dtype=np.bool_, count=len(batch.series)
    )[batch.row_series]
    base_series = np.zeros(len(batch), dtype=np.int64)
    base_series[batch.row_event[~is_segment]] = batch.row_series[~is_segment]
    segments: list[list[str]] = [[] for _ in range(len(batch))]
    if is_segment.any():
        for event, series_index in zip(
            batch.row_event[is_segment].tolist(), batch.row_series[is_segment].tolist(), strict=True
        ):
            segments[event].append(batch.series[series_index].segment)
    records = []
    for index in np.flatnonzero(expire_at > now_ms).tolist():
        series = batch.series[int(base_series[index])]
        confidence = float(batch.confidence[index])
        ts_ms = int(batch.timestamps_ms[index])
        record = JoinRecord(
            model=batch.model,
            ts_ms=ts_ms,
            prediction=columns.predictions[index],
            confidence=None if confidence != confidence else confidence,  # nan: none given
            version=series.version,
            deployment=series.deployment,
            segments=segments[index],
        )
        records.append(
            (
                columns.event_ids[index],
                encode_record(record),
                int(expire_at[index]),
                ts_ms,
                series.deployment == "shadow",
            )
        )
    return records
