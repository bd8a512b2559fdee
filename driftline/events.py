"""The v1 inference event and label, and their fast decoding.

The schemas in ``driftline/schema/`` are the contract with production services. Decoding is done
by msgspec against typed structs, so JSON parsing and validation (types, ranges, patterns) run in
C: per-event Python is the hot path of every consumer.

A message that fails decoding is never an exception for the caller: :func:`decode_event` returns
an :class:`InvalidEvent` carrying a machine-readable :class:`InvalidReason`, which the consumer
sends to the dead-letter topic and counts.

``features`` stays raw JSON (checked to be an object) until a consumer needs the values: a model
without a reference watches no features, and parsing 20 values per event would be most of the
decoding cost. :func:`decode_features` parses and validates them, with the same reasons.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_TIMESTAMP_MS",
    "Deployment",
    "FeatureValues",
    "InferenceEvent",
    "InvalidEvent",
    "InvalidReason",
    "LabelEvent",
    "decode_event",
    "decode_features",
    "decode_label",
    "encode",
    "is_version_name",
    "timestamp_ms",
]

DEFAULT_MAX_EVENT_BYTES = 64 * 1024

Deployment = Literal["stable", "canary", "shadow"]

_EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Checked after decoding (:func:`_misnamed`) rather than by msgspec, which would run both
# regular expressions on every event: most of the decoding time, for a handful of distinct names.
# The schema's patterns, matched as JSON Schema does (ECMA-262: ``$`` is the end of the text;
# Python's ``$`` would also match before a final newline, and let "fraud\n" through).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
# Epoch milliseconds up to the end of year 9999, as RFC 3339 allows: larger integers would not
# fit the int64 columns the consumer bins with.
MAX_TIMESTAMP_MS = 253_402_300_799_999
_Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)] | datetime.datetime
_FeatureValue = float | str | bool | None
FeatureValues = dict[str, _FeatureValue]
_SegmentValue = Annotated[str, msgspec.Meta(max_length=64)]


# gc=False: events are made by the million and cannot take part in a reference cycle (they hold
# strings, numbers and a dict of strings), so the garbage collector need not track them.
class InferenceEvent(msgspec.Struct, frozen=True, gc=False):
    """One model inference (schema ``driftline/inference-event/v1``). Unknown fields are ignored."""

    event_id: _EventId
    ts: _Timestamp
    model: str
    """Matches ``_MODEL_NAME``."""
    version: str
    """Matches ``_VERSION``."""
    deployment: Deployment = "stable"
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    prediction: str | float | bool | None = None
    features: msgspec.Raw = msgspec.Raw(b"{}")
    """The raw JSON object; :func:`decode_features` parses it."""
    segment: Annotated[dict[str, _SegmentValue], msgspec.Meta(max_length=8)] = {}
    error: bool | str = False

    @classmethod
    def build(
        cls, *, features: Mapping[str, float | str | bool | None] | None = None, **fields: Any
    ) -> InferenceEvent:
        """An event from plain values (``features`` as a mapping), as publishers make them."""
        return cls(features=msgspec.Raw(_encoder.encode(dict(features or {}))), **fields)


class LabelEvent(msgspec.Struct, frozen=True, gc=False):
    """The true outcome of an earlier inference (schema ``driftline/label-event/v1``)."""

    event_id: _EventId
    label: str | float | bool
    ts: _Timestamp | None = None
    model: str | None = None
    version: str | None = None
    prediction: str | float | bool | None = None


class InvalidReason(enum.StrEnum):
    """Why a message was refused; the value is the ``reason`` label and dead-letter header."""

    BAD_JSON = "bad_json"
    NOT_UTF8 = "not_utf8"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    OVERSIZED = "oversized"
    EMPTY = "empty"
    # Refused by the consumer rather than the schema:
    FUTURE_TIMESTAMP = "future_timestamp"
    UNKNOWN_MODEL = "unknown_model"


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """A message that could not be decoded: the reason, and a human-readable detail."""

    reason: InvalidReason
    detail: str


_event_decoder = msgspec.json.Decoder(InferenceEvent)
_label_decoder = msgspec.json.Decoder(LabelEvent)
_features_decoder = msgspec.json.Decoder(Annotated[FeatureValues, msgspec.Meta(max_length=512)])
# Most models send numbers only; this decoder is about twice as fast as the general one.
_numeric_features_decoder = msgspec.json.Decoder(
    Annotated[dict[str, float | None], msgspec.Meta(max_length=512)]
)
_encoder = msgspec.json.Encoder()
_well_formed = msgspec.json.Decoder()

_Decoded = TypeVar("_Decoded")


def decode_event(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> InferenceEvent | InvalidEvent:
    """Decode one Kafka message value into an event, or say why it is invalid.

    >>> event = decode_event(b'{"event_id": "e1", "ts": 1700000000000, "model": "fraud",'
    ...                      b' "version": "v2", "latency_ms": 12.5, "features": {"amount": 3}}')
    >>> decode_features(event.features)
    {'amount': 3.0}
    >>> decode_event(b'{"event_id": "e1", "ts": 1, "model": "fraud"}').reason
    <InvalidReason.MISSING_FIELD: 'missing_field'>
    """
    decoded = _decode(_event_decoder, raw, max_bytes)
    if isinstance(decoded, InvalidEvent):
        return decoded
    if memoryview(decoded.features)[0] != _OPENING_BRACE:
        return InvalidEvent(InvalidReason.WRONG_TYPE, "Expected `object` - at `$.features`")
    return _misnamed(decoded.model, decoded.version) or _time_out_of_range(decoded.ts) or decoded


_OPENING_BRACE = ord("{")
# Model and version pairs already found well-named: a few per model, so the set stays small; it
# is emptied if hostile traffic ever fills it.
_WELL_NAMED: set[tuple[str, str]] = set()
_WELL_NAMED_LIMIT = 4096


def _misnamed(model: str, version: str) -> InvalidEvent | None:
    """Why ``model`` or ``version`` does not match its pattern (msgspec's words), if it does not."""
    if (model, version) in _WELL_NAMED:
        return None
    for field, value, pattern in (("model", model, _MODEL_NAME), ("version", version, _VERSION)):
        if pattern.fullmatch(value) is None:
            detail = f"Expected `str` matching regex {pattern.pattern!r} - at `$.{field}`"
            return InvalidEvent(InvalidReason.INVALID_VALUE, detail)
    if len(_WELL_NAMED) >= _WELL_NAMED_LIMIT:
        _WELL_NAMED.clear()
    _WELL_NAMED.add((model, version))
    return None


def is_version_name(version: str) -> bool:
    """Whether ``version`` matches the schema's pattern of an event's version."""
    return _VERSION.fullmatch(version) is not None


def decode_features(raw: msgspec.Raw) -> FeatureValues | InvalidEvent:
    """Parse an event's ``features`` object: numbers, strings, booleans or null (missing)."""
    try:
        try:
            numeric: FeatureValues = _numeric_features_decoder.decode(raw)  # type: ignore[assignment]
            return numeric
        except msgspec.ValidationError:
            return _features_decoder.decode(raw)
    except msgspec.ValidationError as error:
        return InvalidEvent(_validation_reason(str(error)), f"{error} (in `$.features`)")
    except msgspec.DecodeError as error:
        # The event's decoder takes the object's extent without checking its strings' UTF-8.
        reason = InvalidReason.NOT_UTF8 if "UTF-8" in str(error) else InvalidReason.BAD_JSON
        return InvalidEvent(reason, f"{error} (in `$.features`)")


def decode_label(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> LabelEvent | InvalidEvent:
    """Decode one labels-topic message, with the same reasons as :func:`decode_event`."""
    decoded = _decode(_label_decoder, raw, max_bytes)
    if isinstance(decoded, InvalidEvent):
        return decoded
    return _time_out_of_range(decoded.ts) or decoded


def _time_out_of_range(ts: int | datetime.datetime | None) -> InvalidEvent | None:
    """Why an RFC 3339 ``ts`` is refused, if it is: the decoder checks the range of integer ones
    only (an offset can take 9999-12-31 past the last millisecond an integer may name)."""
    if ts is None or type(ts) is int or 0 <= timestamp_ms(ts) <= MAX_TIMESTAMP_MS:
        return None
    detail = f"Expected a time from 1970-01-01 to 9999-12-31T23:59:59.999Z - at `$.ts`, got {ts}"
    return InvalidEvent(InvalidReason.OUT_OF_RANGE, detail)


def _decode(
    decoder: msgspec.json.Decoder[_Decoded], raw: bytes | None, max_bytes: int
) -> _Decoded | InvalidEvent:
    if not raw:
        return InvalidEvent(InvalidReason.EMPTY, "empty message value")
    if len(raw) > max_bytes:
        return InvalidEvent(InvalidReason.OVERSIZED, f"{len(raw)} bytes > limit {max_bytes}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as error:
        # msgspec validates while it parses, so malformed JSON can fail validation first (a
        # random byte string starting with a digit is "not an object"): malformed wins.
        try:
            _well_formed.decode(raw)
        except msgspec.DecodeError as malformed:
            # 1e999 is well-formed JSON that overflows a double: that stays non_finite.
            if not str(malformed).startswith("Number out of range"):
                return InvalidEvent(InvalidReason.BAD_JSON, str(malformed))
        detail = str(error)
        return InvalidEvent(_validation_reason(detail), detail)
    except msgspec.DecodeError as error:
        detail = str(error)
        reason = InvalidReason.NOT_UTF8 if "UTF-8" in detail else InvalidReason.BAD_JSON
        return InvalidEvent(reason, detail)


def _validation_reason(detail: str) -> InvalidReason:
    """Map msgspec's validation message onto a stable reason (msgspec has no error codes)."""
    if detail.startswith("Object missing required field"):
        return InvalidReason.MISSING_FIELD
    if detail.startswith("Expected `object`, got") and " - at " not in detail:
        return InvalidReason.NOT_OBJECT
    if detail.startswith("Number out of range"):
        # JSON has no NaN or Infinity literal; a number like 1e999 overflows to infinity.
        return InvalidReason.NON_FINITE
    if "matching regex" in detail or detail.startswith(("Invalid enum value", "Invalid RFC3339")):
        return InvalidReason.INVALID_VALUE
    if any(bound in detail for bound in (">=", "<=", " length ")):
        return InvalidReason.OUT_OF_RANGE
    return InvalidReason.WRONG_TYPE


def timestamp_ms(ts: int | datetime.datetime) -> int:
    """Epoch milliseconds of an event's ``ts``, which is either already that or RFC 3339."""
    if type(ts) is int:
        return ts
    assert isinstance(ts, datetime.datetime)
    if ts.tzinfo is None:
        # The schema demands an offset; msgspec accepts naive datetimes, which we read as UTC.
        ts = ts.replace(tzinfo=datetime.UTC)
    return math.floor(ts.timestamp() * 1000)


def encode(message: InferenceEvent | LabelEvent) -> bytes:
    """The JSON bytes of an event or label, as a publisher sends them."""
    return _encoder.encode(message)
