"""Decoding v1 events: every refusal has its machine-readable reason."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import driftline
from driftline import events
from driftline.events import (
    MAX_TIMESTAMP_MS,
    InferenceEvent,
    InvalidEvent,
    InvalidReason,
    LabelEvent,
    decode_event,
    decode_features,
    decode_label,
    encode,
    timestamp_ms,
)

VALID = b'{"event_id":"e1","ts":1700000000000,"model":"fraud","version":"v2"}'


def _with(**fields: object) -> bytes:
    event = msgspec.json.decode(VALID)
    event.update(fields)
    return msgspec.json.encode(event)


def _without(name: str) -> bytes:
    event = msgspec.json.decode(VALID)
    del event[name]
    return msgspec.json.encode(event)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "e1", "ts": ', InvalidReason.BAD_JSON),
        (b"\xff\xfe{}", InvalidReason.BAD_JSON),
        (
            b'{"event_id": "\xff\xfe", "ts": 1, "model": "m", "version": "v"}',
            InvalidReason.NOT_UTF8,
        ),
        (b"[1, 2, 3]", InvalidReason.NOT_OBJECT),
        (b'"just a string"', InvalidReason.NOT_OBJECT),
        (_without("model"), InvalidReason.MISSING_FIELD),
        (_without("event_id"), InvalidReason.MISSING_FIELD),
        (_with(model=42), InvalidReason.WRONG_TYPE),
        (_with(latency_ms="fast"), InvalidReason.WRONG_TYPE),
        (_with(ts=1.5), InvalidReason.WRONG_TYPE),
        (_with(features=[1, 2]), InvalidReason.WRONG_TYPE),
        (VALID[:-1] + b',"latency_ms":1e999}', InvalidReason.NON_FINITE),
        (_with(latency_ms=-1), InvalidReason.OUT_OF_RANGE),
        (_with(confidence=1.5), InvalidReason.OUT_OF_RANGE),
        (_with(ts=-5), InvalidReason.OUT_OF_RANGE),
        (_with(ts=2**70), InvalidReason.OUT_OF_RANGE),
        # RFC 3339 times, which the decoder does not range-check: past 9999, and before 1970.
        (_with(ts="9999-12-31T23:59:59-23:59"), InvalidReason.OUT_OF_RANGE),
        (_with(ts="1969-12-31T23:59:59Z"), InvalidReason.OUT_OF_RANGE),
        (_with(event_id=""), InvalidReason.OUT_OF_RANGE),
        (_with(model="-starts-with-dash"), InvalidReason.INVALID_VALUE),
        (_with(deployment="blue"), InvalidReason.INVALID_VALUE),
        (_with(ts="yesterday"), InvalidReason.INVALID_VALUE),
        (b"", InvalidReason.EMPTY),
        (None, InvalidReason.EMPTY),
    ],
)
def test_every_invalid_event_gets_its_reason(raw: bytes | None, reason: InvalidReason) -> None:
    decoded = decode_event(raw)
    assert isinstance(decoded, InvalidEvent)
    assert decoded.reason == reason, decoded.detail


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        (b'{"x": -1e400}', InvalidReason.NON_FINITE),
        (b'{"x": [1]}', InvalidReason.WRONG_TYPE),
        (msgspec.json.encode({f"f{i}": 1 for i in range(513)}), InvalidReason.OUT_OF_RANGE),
        # The event's decoder does not check the strings of the raw object: these raised.
        (b'{"country": "D\xffE"}', InvalidReason.NOT_UTF8),
        (b'{"amount": 1, "c\xff": 2}', InvalidReason.NOT_UTF8),
    ],
)
def test_features_are_validated_when_parsed(features: bytes, reason: InvalidReason) -> None:
    event = decode_event(VALID[:-1] + b',"features":' + features + b"}")
    assert isinstance(event, InferenceEvent), "raw features are parsed only when watched"
    parsed = decode_features(event.features)
    assert isinstance(parsed, InvalidEvent) and parsed.reason == reason


def test_features_mix_numbers_strings_booleans_and_missing() -> None:
    raw = msgspec.Raw(b'{"amount": 3, "country": "DE", "vip": true, "age": null}')
    assert decode_features(raw) == {"amount": 3.0, "country": "DE", "vip": True, "age": None}
    assert decode_features(msgspec.Raw(b'{"a": 1, "b": 2.5}')) == {"a": 1.0, "b": 2.5}


def test_oversized_is_refused_before_parsing() -> None:
    raw = _with(features={"blob": "x" * (1024 * 1024)})
    decoded = decode_event(raw)
    assert isinstance(decoded, InvalidEvent)
    assert decoded.reason == InvalidReason.OVERSIZED
    assert decode_event(raw, max_bytes=2 * 1024 * 1024) != decoded


def test_valid_event_with_unknown_fields_and_rfc3339_time() -> None:
    decoded = decode_event(_with(ts="2024-01-02T03:04:05.250+01:00", shiny_new_field=[1]))
    assert isinstance(decoded, InferenceEvent)
    assert timestamp_ms(decoded.ts) == int(
        datetime.datetime(2024, 1, 2, 2, 4, 5, 250_000, tzinfo=datetime.UTC).timestamp() * 1000
    )
    assert decoded.deployment == "stable"


def test_label_decoding_shares_the_reasons() -> None:
    label = decode_label(b'{"event_id": "e1", "label": true}')
    assert isinstance(label, LabelEvent) and label.label is True
    refused = decode_label(b'{"label": 1}')
    assert isinstance(refused, InvalidEvent) and refused.reason == InvalidReason.MISSING_FIELD
    late = decode_label(b'{"event_id": "e1", "label": 1, "ts": "9999-12-31T23:59:59-01:00"}')
    assert isinstance(late, InvalidEvent) and late.reason == InvalidReason.OUT_OF_RANGE


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    decoded = decode_event(raw)
    assert isinstance(decoded, InferenceEvent | InvalidEvent)


@given(
    st.builds(
        InferenceEvent,
        event_id=st.text(min_size=1, max_size=20),
        ts=st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS),
        model=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,10}\Z"),
        version=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,10}\Z"),
        latency_ms=st.none() | st.floats(min_value=0, max_value=1e9),
        confidence=st.none() | st.floats(min_value=0, max_value=1),
    )
)
def test_encode_decode_round_trip(event: InferenceEvent) -> None:
    assert decode_event(encode(event)) == event


_SCHEMA = json.loads(
    (Path(driftline.__file__).parent / "schema" / "inference-event.schema.json").read_text()
)
_NAME_TEXT = st.text(alphabet=st.sampled_from("aZ09_.+-/ \n"), max_size=70)


def _matches_as_json_schema(pattern: str, text: str) -> bool:
    """ECMA-262 semantics, which JSON Schema uses: ``^`` and ``$`` are the ends of the text."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.fullmatch(pattern[1:-1], text) is not None


@given(model=_NAME_TEXT, version=_NAME_TEXT)
@example(model="fraud\n", version="v1")  # Python's $ also matches before a final newline
@example(model="fraud", version="v1\n")
@example(model="f" * 64, version="v" * 65)
def test_model_and_version_are_refused_exactly_when_the_schema_pattern_refuses_them(
    model: str, version: str
) -> None:
    """The names are checked after decoding, once per distinct pair: the answer must still be
    the schema's, the first time and every time after."""
    raw = _with(model=model, version=version)
    model_ok = _matches_as_json_schema(_SCHEMA["properties"]["model"]["pattern"], model)
    version_ok = _matches_as_json_schema(_SCHEMA["properties"]["version"]["pattern"], version)
    for _ in range(2):
        decoded = decode_event(raw)
        if model_ok and version_ok:
            assert isinstance(decoded, InferenceEvent)
            assert (decoded.model, decoded.version) == (model, version)
        else:
            assert isinstance(decoded, InvalidEvent)
            assert decoded.reason is InvalidReason.INVALID_VALUE
            assert decoded.detail.endswith("`$.model`" if not model_ok else "`$.version`")


def test_a_full_cache_of_well_named_pairs_is_emptied_not_grown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "_WELL_NAMED", set())
    monkeypatch.setattr(events, "_WELL_NAMED_LIMIT", 3)
    for number in range(10):
        assert isinstance(decode_event(_with(version=f"v{number}")), InferenceEvent)
        assert len(events._WELL_NAMED) <= 3
    refused = decode_event(_with(version="-v9"))
    assert isinstance(refused, InvalidEvent) and refused.reason is InvalidReason.INVALID_VALUE
