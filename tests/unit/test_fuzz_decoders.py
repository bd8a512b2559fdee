"""Fuzzing the decoders: 106,000 generated payloads, no crash, every one counted or refused.

Three generators: random bytes, random JSON values (hypothesis), and seeded mutations of valid
events (byte flips, truncation, field deletion and retyping) - the last finds the most edges.
Each payload goes through the real assembler, so "counted or refused" is checked end to end.
"""

from __future__ import annotations

import random
import time

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.batching import BatchAssembler
from detectors.stores.memory_store import MemoryWindowStore
from detectors.window_update import WindowLayout
from driftline.config import parse_config
from driftline.events import (
    InferenceEvent,
    InvalidEvent,
    InvalidReason,
    LabelEvent,
    decode_event,
    decode_features,
    decode_label,
)

NOW_MS = int(time.time() * 1000)
VALID = {
    "event_id": "e1",
    "ts": NOW_MS,
    "model": "fraud",
    "version": "v1",
    "deployment": "canary",
    "latency_ms": 12.5,
    "confidence": 0.9,
    "prediction": "yes",
    "error": False,
    "features": {"amount": 12.0, "country": "DE"},
    "segment": {"region": "eu"},
}
REPLACEMENTS: list[object] = [None, -1, 1e308, "", "x" * 200, [], {}, True, 2**70, -0.0, "NaN"]


def _mutations(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    base = msgspec.json.encode(VALID)
    payloads = []
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            raw = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            payloads.append(bytes(raw))
        elif kind == 1:
            payloads.append(base[: rng.randrange(len(base))])
        else:
            event = dict(VALID)
            field = rng.choice(list(VALID))
            if kind == 2:
                del event[field]
            else:
                event[field] = rng.choice(REPLACEMENTS)
            payloads.append(msgspec.json.encode(event))
    return payloads


CONFIG = parse_config({"monitoring": {"max_models": 5}})


def _assemble(payloads: list[bytes]) -> tuple[int, int]:
    config = CONFIG
    assembler = BatchAssembler(config, MemoryWindowStore(WindowLayout()))
    batch = assembler.assemble([0] * len(payloads), list(range(len(payloads))), payloads, NOW_MS)
    counted = sum(len(model_batch) for model_batch in batch.models.values())
    for refused in batch.refused:
        assert isinstance(refused.invalid.reason, InvalidReason)
        assert refused.invalid.detail
    return counted, len(batch.refused)


def test_hundred_thousand_mutated_and_random_payloads() -> None:
    rng = random.Random(7)
    payloads = _mutations(90_000, seed=1) + [
        rng.randbytes(rng.randrange(0, 400)) for _ in range(10_000)
    ]
    counted, refused = 0, 0
    for start in range(0, len(payloads), 5000):
        chunk = payloads[start : start + 5000]
        batch_counted, batch_refused = _assemble(chunk)
        assert batch_counted + batch_refused == len(chunk), "every payload counted or refused"
        counted, refused = counted + batch_counted, refused + batch_refused
    assert counted > 1000 and refused > 10_000, (counted, refused)
    for raw in payloads[:20_000]:
        label = decode_label(raw)
        assert isinstance(label, LabelEvent | InvalidEvent)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries({}, optional={name: json_values for name in VALID}).map(
    lambda event: {**event}
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(json_values, event_like))
def test_generated_json_values_never_crash(value: object) -> None:
    raw = msgspec.json.encode(value)
    decoded = decode_event(raw)
    if isinstance(decoded, InferenceEvent):
        assert isinstance(decode_features(decoded.features), dict | InvalidEvent)
    else:
        assert isinstance(decoded.reason, InvalidReason)
    assert isinstance(decode_label(raw), LabelEvent | InvalidEvent)
    assert sum(_assemble([raw])) == 1


@settings(max_examples=4000, deadline=None)
@given(st.binary(max_size=2000))
def test_generated_bytes_never_crash(raw: bytes) -> None:
    assert sum(_assemble([raw])) == 1
