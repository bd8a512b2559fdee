"""References: bins, vectorised binning, JSON, the window field tag, the cache, freezing."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.window_writer import WindowWriter
from detectors import reference_builder
from detectors.reference import (
    FeatureKind,
    FeatureReference,
    Reference,
    ReferenceFormatError,
    category_key,
)
from detectors.reference_builder import (
    ReferenceBuilder,
    ReferenceCounter,
    freeze_window,
    window_counts,
)
from detectors.reference_cache import ReferenceCache
from detectors.sequential_detector import SequentialReference
from detectors.series import Series
from detectors.stores.memory_reference_store import MemoryReferenceStore
from detectors.stores.memory_store import MemoryWindowStore
from detectors.window_summary import summarise
from detectors.window_update import WindowLayout
from driftline import baseline_command
from driftline.cli import main
from driftline.config import Config, parse_config
from driftline.events import InferenceEvent, decode_event
from driftline.line_files import zstd

_encoder = msgspec.json.Encoder()
NOW_MS = 1_700_000_000_000


def event(index: int, **fields: Any) -> bytes:
    document = {
        "event_id": f"e{index}",
        "ts": NOW_MS - 1000 + index % 1000,
        "model": "fraud",
        "version": "v1",
        **fields,
    }
    return _encoder.encode(document)


def decoded(lines: list[bytes]) -> list[InferenceEvent]:
    events = [decode_event(line) for line in lines]
    assert all(isinstance(e, InferenceEvent) for e in events)
    return events  # type: ignore[return-value]


def expected_numeric_bin(value: object, edges: tuple[float, ...]) -> int:
    """The documented numeric layout, one value at a time, written independently."""
    if value is None or isinstance(value, dict):
        return 0
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        return 0
    if math.isnan(number):
        return 0
    if number < edges[0]:
        return 1
    if number > edges[-1]:
        return len(edges) + 1
    inner = 0
    for index, edge in enumerate(edges[1:-1]):
        if number >= edge:
            inner = index + 1
    return 2 + inner


def test_a_sampled_build_has_edges_near_the_exact_quantiles_and_counts_every_event() -> None:
    """Beyond ``sample_size`` numbers a column keeps a uniform sample: its edges are quantiles
    of the sample (within 0.05 of the exact rank for a sample of 2,000: over four standard
    errors) and the extremes stay exact; the second pass counts all 30,000 events exactly."""
    rng = np.random.default_rng(6)
    count = 30_000
    # In ascending order: a sample that favoured early or late events would miss the quantiles.
    normal = np.sort(rng.normal(10.0, 2.0, count).round(4))
    heavy = rng.lognormal(0.0, 1.5, count).round(4)
    category = rng.choice(["a", "b", "c"], count, p=[0.6, 0.3, 0.1])
    confidence = rng.uniform(0.0, 1.0, count).round(3)
    lines = [
        event(
            i,
            features={"normal": float(normal[i]), "heavy": float(heavy[i]), "c": str(category[i])},
            confidence=float(confidence[i]),
            prediction=str(category[i]),
        )
        for i in range(count)
    ]
    events = decoded(lines)

    def sampled_build(batch_size: int) -> Reference:
        builder = ReferenceBuilder("fraud", bins=10, sample_size=2_000)
        for start in range(0, count, batch_size):
            builder.add(events[start : start + batch_size])
        assert builder.sampled
        return builder.build(created_at_ms=0)

    layout = sampled_build(1_000)
    # The sample does not depend on how the events were cut into batches (or files).
    assert sampled_build(777).features == layout.features
    counter = ReferenceCounter(layout)
    for start in range(0, count, 4_096):
        counter.add(events[start : start + 4_096])
    reference = counter.build()
    assert reference.events == count
    [sampled_normal] = [feature for feature in layout.features if feature.name == "normal"]
    assert sum(sampled_normal.counts) < count, "the first pass counted only its sample"

    features = {feature.name: feature for feature in reference.features}
    for name, values in (("normal", normal), ("heavy", heavy)):
        feature = features[name]
        assert feature.edges == next(f.edges for f in layout.features if f.name == name)
        assert (feature.edges[0], feature.edges[-1]) == (values.min(), values.max())
        interior = np.asarray(feature.edges[1:-1])
        ranks = (values[:, None] < interior).mean(axis=0)
        targets = np.arange(1, len(interior) + 1) / 10
        assert np.abs(ranks - targets).max() < 0.05, (name, ranks)
        expected = np.bincount(
            [expected_numeric_bin(float(v), feature.edges) for v in values],
            minlength=feature.bin_count,
        )
        assert list(feature.counts) == expected.tolist()
    categories = features["c"]
    assert dict(zip(categories.categories, categories.counts[2:], strict=True)) == {
        "a": int((category == "a").sum()),
        "b": int((category == "b").sum()),
        "c": int((category == "c").sum()),
    }
    assert reference.confidence is not None
    confidence_bins = np.minimum((confidence * 20).astype(int), 19)
    assert list(reference.confidence.counts[2:-1]) == np.bincount(confidence_bins).tolist()
    assert reference.prediction is not None and sum(reference.prediction.counts) == count
    assert baseline_command.SAMPLE_SIZE == reference_builder.SAMPLE_SIZE, "the CLI's default"


def test_numeric_edges_are_reference_quantiles_and_counts_are_their_own_binning() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(10.0, 2.0, 5_000).round(3)
    lines = [event(i, features={"x": float(v)}) for i, v in enumerate(values)]
    lines += [event(5_000 + i, features={}) for i in range(40)]  # missing
    builder = ReferenceBuilder("fraud", bins=20)
    assert builder.add(decoded(lines)) == 5_040
    [feature] = builder.build(created_at_ms=0).features

    interior = np.unique(np.quantile(values, np.arange(1, 20) / 20, method="lower"))
    assert feature.kind is FeatureKind.NUMERIC
    assert feature.edges == (values.min(), *interior[interior > values.min()], values.max())
    assert len(feature.counts) == len(feature.edges) + 2
    expected = np.bincount(
        [expected_numeric_bin(float(v), feature.edges) for v in values],
        minlength=feature.bin_count,
    )
    expected[0] += 40
    assert list(feature.counts) == expected.tolist()
    assert feature.counts[1] == feature.counts[-1] == 0  # nothing outside its own range
    assert feature.spread == pytest.approx(values.std())
    # Bin values: the mean of the reference values in each quantile bin, extremes outside.
    inner_bins = np.array([expected_numeric_bin(float(v), feature.edges) for v in values])
    means = [values[inner_bins == b].mean() for b in range(2, len(feature.edges) + 1)]
    assert feature.bin_values == pytest.approx([values.min(), *means, values.max()])


def test_numeric_binning_matches_the_layout_on_every_edge_case() -> None:
    feature = FeatureReference.numeric(
        "x",
        edges=(0.0, 1.0, 2.0, 5.0),
        counts=(0, 0, 1, 1, 1, 0),
        bin_values=(0, 0.5, 1.5, 3, 5),
        spread=1.0,
    )
    reference = Reference("fraud", 0, (feature,))
    probes: list[object] = [
        -1.0,
        0.0,
        0.5,
        1.0,
        1.5,
        2.0,
        4.99,
        5.0,
        5.01,
        1e9,
        None,
        "2.5",
        "abc",
        True,
        False,
    ]
    rows = [{"x": value} for value in probes] + [{}]
    expected = [expected_numeric_bin(value, feature.edges) for value in probes] + [0]
    assert expected == [1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 0, 4, 0, 3, 2, 0]
    assert reference.bin_features(rows)["x"].tolist() == expected
    # The same values through the batched fast path (several numeric features at once).
    wide = Reference(
        "fraud",
        0,
        (
            feature,
            FeatureReference.numeric(
                "y", edges=(0.0, 1.0), counts=(0, 0, 1, 0), bin_values=(0.0, 0.5, 1.0), spread=1.0
            ),
        ),
    )
    clean = [{"x": v, "y": 0.5} for v in probes if not isinstance(v, str)]
    bins = wide.bin_features(clean)
    assert bins["x"].tolist() == [expected_numeric_bin(row["x"], feature.edges) for row in clean]
    assert bins["y"].tolist() == [2] * len(clean)
    assert wide.bin_features(rows)["x"].tolist() == expected
    # And with the values read beforehand, as a consumer with the sequential test passes them.
    assert reference.bin_features(rows, reference.numeric_values(rows))["x"].tolist() == expected
    given = wide.bin_features(clean, wide.numeric_values(clean))
    assert {name: found.tolist() for name, found in given.items()} == {
        name: found.tolist() for name, found in bins.items()
    }


COUNTRY = FeatureReference.categorical("country", categories=("FR",), counts=(3, 1, 1))


def unit_feature(name: str, sequential: bool = True) -> FeatureReference:
    """A numeric feature with one bin, [0, 1), and a sequential test of N(0, 1) unless not."""
    fitted = SequentialReference.fit(np.random.default_rng(3).normal(0, 1, 5_000))
    return FeatureReference.numeric(
        name,
        edges=(0.0, 1.0),
        counts=(0, 0, 5, 0),
        bin_values=(0.0, 0.5, 1.0),
        spread=1.0,
        sequential=fitted if sequential else None,
    )


def test_sequential_columns_point_at_the_tested_features_among_the_numeric_ones() -> None:
    """Only numeric features have a sequential test, and not every one (too few numbers to fit):
    the tracker picks its columns out of the binning's matrix by these positions."""
    features = (
        COUNTRY,
        unit_feature("untested", sequential=False),
        unit_feature("amount"),
        unit_feature("age"),
    )
    reference = Reference("fraud", 0, features)
    rows = [{"country": "FR", "untested": 1.0, "amount": 2.0, "age": 3.0}, {"age": 4.0}]
    assert reference.sequential_columns.tolist() == [1, 2]
    values = reference.numeric_values(rows)[:, reference.sequential_columns]
    assert np.array_equal(values, [[2.0, 3.0], [np.nan, 4.0]], equal_nan=True)


@pytest.mark.parametrize("categorical_only", [False, True])
def test_a_consumer_with_the_sequential_test_takes_odd_values_and_categorical_references(
    categorical_only: bool,
) -> None:
    """A lone numeric feature with a non-numeric value (missing for the binning and the test), or
    a reference without a numeric feature: the consumer's write goes through."""
    reference = Reference("fraud", 0, (COUNTRY,) if categorical_only else (unit_feature("x"),))
    config = Config()
    store = MemoryWindowStore(WindowLayout(), clock=lambda: NOW_MS)
    assembler = BatchAssembler(config, store, lambda model: reference)
    writer = WindowWriter(
        store,
        binning_from_config(config),
        lambda model: reference,
        sequential=config.drift.sequential_policy(),
    )
    values: list[object] = [0.5, "abc", 2.0]
    chunk = [event(i, features={"x": v, "country": "FR"}) for i, v in enumerate(values)]
    assembled = assembler.assemble([0] * 3, [0, 1, 2], chunk, NOW_MS)
    assert writer.write_all(list(assembled.models.values()), NOW_MS) == 3
    [fields] = store.read_windows("fraud", [300_000], NOW_MS)
    feature_fields = {field: count for field, count in fields.items() if ":x:" in field}
    if categorical_only:
        assert feature_fields == {}
    else:
        # Bins: 0 missing, 2 the quantile bin, 3 overflow.
        tag = reference.field_tag
        assert feature_fields == {f"v1|stable||feature:{tag}:x:{b}": 1 for b in (0, 2, 3)}
        assert store.sequential_states("fraud", [0])[0] is not None


def test_infinities_are_missing_and_huge_values_keep_a_finite_spread() -> None:
    """JSON has no infinity, but "inf" parses to one; no edge or mean holds it, so it is missing
    (it failed the build, and landed in the overflow bin live). Values past 1e154 overflowed the
    spread and failed the build."""
    values: list[object] = [float(i) for i in range(30)] + ["inf", "-Infinity", 1e200]
    lines = [event(i, features={"x": v}) for i, v in enumerate(values)]
    builder = ReferenceBuilder("fraud", feature_types={"x": "numeric"})
    builder.add(decoded(lines))
    reference = builder.build(created_at_ms=0)
    [feature] = reference.features
    assert feature.counts[0] == 2, "the two infinities are missing"
    expected = float(np.std(np.array([*range(30), 1e200]) / 1e200) * 1e200)
    assert math.isfinite(feature.spread) and feature.spread == pytest.approx(expected, rel=1e-12)
    rows = [{"x": "inf"}, {"x": "-inf"}, {"x": 3.0}]
    assert reference.bin_features(rows)["x"].tolist()[:2] == [0, 0]
    assert np.isnan(reference.numeric_values(rows)[:2]).all()


def test_categorical_keeps_the_top_k_by_frequency_then_name() -> None:
    values: list[object] = ["FR"] * 5 + ["DE"] * 5 + ["IT"] * 3 + [3.0] * 2 + [True] + [None] * 4
    lines = [event(i, features={"c": v}) for i, v in enumerate(values)]
    builder = ReferenceBuilder("fraud", top_k=3, feature_types={"c": "categorical"})
    builder.add(decoded(lines))
    [feature] = builder.build(created_at_ms=0).features

    assert feature.kind is FeatureKind.CATEGORICAL
    assert feature.categories == ("DE", "FR", "IT")
    assert feature.counts == (4, 3, 5, 5, 3)  # missing, other ("3" twice, "true"), DE, FR, IT
    column: list[object] = ["DE", "IT", "ES", None, 3, "3", True, "FR"]
    assert feature.bin_column(column).tolist() == [2, 4, 1, 0, 1, 1, 1, 3]
    assert [category_key(v) for v in (3, 3.5, False, "x")] == ["3", "3.5", "false", "x"]


def test_a_feature_is_numeric_only_when_every_value_is_a_number() -> None:
    lines = [
        event(0, features={"n": 1.0, "mixed": 1.0, "flag": True}, prediction=0.3),
        event(1, features={"n": 2.0, "mixed": "high", "flag": False}, prediction=0.7),
    ]
    builder = ReferenceBuilder("fraud")
    builder.add(decoded(lines))
    reference = builder.build(created_at_ms=0)
    kinds = {feature.name: feature.kind for feature in reference.features}
    assert kinds == {"flag": "categorical", "mixed": "categorical", "n": "numeric"}
    assert reference.prediction is not None and reference.prediction.kind is FeatureKind.NUMERIC


def test_reference_counts_equal_the_window_the_consumer_writes_for_the_same_events() -> None:
    """The reference side and the consumer side bin with one code path: same events, same
    histograms, for features, prediction and confidence."""
    rng = np.random.default_rng(9)
    lines = []
    for i in range(3_000):
        features: dict[str, object] = {
            "amount": round(float(rng.lognormal(3, 1)), 2),
            "country": str(rng.choice(["DE", "FR", "IT", "ES"])),
        }
        if i % 17 == 0:
            features["amount"] = None
        if i % 29 == 0:
            del features["country"]
        fields: dict[str, Any] = {"features": features, "prediction": ["yes", "no"][i % 2]}
        if i % 13:
            fields["confidence"] = round(float(rng.beta(8, 2)), 4)
        lines.append(event(i, **fields))
    config = Config()
    builder = ReferenceBuilder("fraud", top_k=3, confidence_bins=config.monitoring.confidence_bins)
    builder.add(decoded(lines))
    reference = builder.build(created_at_ms=0)

    store = MemoryWindowStore(WindowLayout(), clock=lambda: NOW_MS)
    assembler = BatchAssembler(config, store, lambda model: reference)
    writer = WindowWriter(store, binning_from_config(config), lambda model: reference)
    for first in range(0, len(lines), 700):
        chunk = lines[first : first + 700]
        offsets = list(range(first, first + len(chunk)))
        assembled = assembler.assemble([0] * len(chunk), offsets, chunk, NOW_MS)
        assert not assembled.refused
        writer.write_all(list(assembled.models.values()), NOW_MS)
    [fields] = store.read_windows("fraud", [300_000], NOW_MS)
    window = summarise(fields)[Series("v1", "stable")]

    counts = window_counts(reference, window)
    assert set(counts) == {"amount", "country", "@prediction", "@confidence"}
    for item in reference.items:
        assert counts[item.name].tolist() == list(item.counts), item.name
    assert reference.confidence is not None and reference.confidence.counts[0] == 3_000 - 2_769


def test_window_fields_carry_the_reference_tag_so_two_references_never_mix() -> None:
    def numeric_reference(top: float) -> Reference:
        feature = FeatureReference.numeric(
            "x",
            edges=(0.0, top),
            counts=(0, 0, 10, 0),
            bin_values=(0.0, top / 2, top),
            spread=1.0,
        )
        return Reference("fraud", 0, (feature,))

    first, second = numeric_reference(1.0), numeric_reference(10.0)
    assert first.field_tag != second.field_tag
    config = Config()
    store = MemoryWindowStore(WindowLayout(), clock=lambda: NOW_MS)
    for reference, offset, value in ((first, 0, 5.0), (second, 100, 5.0)):
        assembler = BatchAssembler(config, store, lambda model, r=reference: r)
        writer = WindowWriter(store, binning_from_config(config), lambda model, r=reference: r)
        chunk = [event(offset + i, features={"x": value}) for i in range(7 if offset else 3)]
        assembled = assembler.assemble(
            [0] * len(chunk), list(range(offset, offset + len(chunk))), chunk, NOW_MS
        )
        writer.write_all(list(assembled.models.values()), NOW_MS)
    [fields] = store.read_windows("fraud", [300_000], NOW_MS)
    assert f"v1|stable||feature:{first.field_tag}:x:3" in fields
    window = summarise(fields)[Series("v1", "stable")]
    assert window_counts(first, window)["x"].tolist() == [0, 0, 0, 3]  # 5 > 1: overflow
    assert window_counts(second, window)["x"].tolist() == [0, 0, 7, 0]


def test_json_round_trip_is_exact_and_the_id_is_the_content_hash() -> None:
    builder = ReferenceBuilder("fraud", version="v41")
    builder.add(
        decoded(
            [
                event(
                    i,
                    features={"x": i / 7, "c": "ab"[i % 2]},
                    confidence=0.5,
                    prediction="yes",
                    version="v41",
                )
                for i in range(200)
            ]
        )
    )
    reference = builder.build(created_at_ms=1_234, source="unit")
    text = reference.to_json()
    again = Reference.from_json(text)
    assert again == reference and again.to_json() == text
    content = {k: v for k, v in json.loads(text).items() if k != "reference_id"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    assert reference.reference_id == hashlib.sha256(canonical.encode()).hexdigest()
    assert reference.field_tag == reference.reference_id[:12]
    # An id is optional on import (it is recomputed) but must match when present.
    assert Reference.from_json(json.dumps(content)).reference_id == reference.reference_id
    edited = json.loads(text)
    edited["features"][0]["counts"][0] += 1
    with pytest.raises(ReferenceFormatError, match=r"reference_id: .* does not match the content"):
        Reference.from_json(json.dumps(edited))


def _document() -> dict[str, Any]:
    feature = FeatureReference.numeric(
        "x", edges=(0.0, 1.0), counts=(0, 0, 1, 0), bin_values=(0.0, 0.5, 1.0), spread=1.0
    )
    document = Reference("fraud", 0, (feature,)).to_dict()
    del document["reference_id"]
    return document


def _mismatched_factors(document: dict[str, Any]) -> None:
    """A sequential block with three factors on one side and one on the other."""
    document["features"] = [unit_feature("x").to_dict()]
    document["features"][0]["sequential"]["lower_factors"] = [1.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="v0"), "reference.format: expected 'driftline/reference/v1'"),
        (lambda d: d.update(extra=1), "reference: unknown key(s) ['extra']"),
        (lambda d: d.update(model=3), "reference.model: expected str, got 3"),
        (
            lambda d: d["features"][0].update(counts=[0, 0, 1]),
            "reference.features[0].counts: expected 4 bins",
        ),
        (
            lambda d: d["features"][0].update(edges=[1.0, 0.0]),
            "reference.features[0].edges: must be min < strictly increasing",
        ),
        (
            lambda d: d["features"][0].update(kind="ordinal"),
            "reference.features[0].kind: expected 'numeric' or 'categorical'",
        ),
        (lambda d: d["features"][0].update(name="@confidence"), "names starting with @"),
        (lambda d: d["features"][0].update(counts=[0, 0, -1, 0]), "counts must be >= 0"),
        # Accepted before, and then fatal to binning, a tick or the sequential test.
        (
            lambda d: d["features"][0].update(edges=[0, 10**400]),
            "reference.features[0].edges: 1000",
        ),
        (
            lambda d: d["features"][0].update(counts=[0, 0, 2**63, 0]),
            "reference.features[0].counts: must sum to less than 2^63",
        ),
        (lambda d: d.update(created_at_ms=10**400), "created_at_ms: must be 0 to 2^63 - 1"),
        (
            lambda d: d.update(prediction={**d["features"][0], "name": "y"}),
            "prediction.name: must be '@prediction', got 'y'",
        ),
        (
            lambda d: d.update(
                confidence=FeatureReference.categorical(
                    "@confidence", categories=(), counts=(0, 0)
                ).to_dict()
            ),
            "confidence: must be numeric and named '@confidence', got categorical",
        ),
        (_mismatched_factors, "upper_factors and lower_factors need as many factors"),
    ],
)
def test_bad_reference_documents_are_refused_naming_the_field(change: Any, message: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(ReferenceFormatError) as raised:
        Reference.from_json(json.dumps(document))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        '{"format": "driftline/reference/v1", "model": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"format": "driftline/reference/v1", "created_at_ms": ' + "1" * 4_301 + "}",
    ],
    ids=["nested-too-deep", "integer-too-long"],
)
def test_json_the_parser_refuses_is_a_format_error(text: str) -> None:
    with pytest.raises(ReferenceFormatError, match="not valid JSON"):
        Reference.from_json(text)


class CountingStore(MemoryReferenceStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.id_reads = 0

    def load(self, model: str) -> Reference | None:
        self.loads += 1
        return super().load(model)

    def reference_id(self, model: str) -> str | None:
        self.id_reads += 1
        return super().reference_id(model)


def test_reference_cache_answers_from_memory_and_reloads_only_a_new_id() -> None:
    seconds = [0.0]
    store = CountingStore()
    cache = ReferenceCache(store, refresh_seconds=30, clock_s=lambda: seconds[0])
    assert cache.reference("fraud") is None
    first = Reference("fraud", 1, ())
    store.save(first)
    seconds[0] = 29.9
    assert cache.reference("fraud") is None, "not before the refresh interval"
    seconds[0] = 30.0
    assert cache.binner_for("fraud") is first
    assert (store.loads, store.id_reads) == (2, 1)
    for tick in range(1, 5):
        seconds[0] = 30.0 + 30 * tick
        assert cache.reference("fraud") is first
    assert (store.loads, store.id_reads) == (2, 5), "same id: polled, never reloaded"
    second = Reference("fraud", 2, ())
    store.save(second)
    seconds[0] = 1_000.0
    assert cache.reference("fraud") is second
    store.delete("fraud")
    seconds[0] = 2_000.0
    assert cache.reference("fraud") is None


def test_freezing_a_window_keeps_the_bins_and_takes_the_window_counts() -> None:
    builder = ReferenceBuilder("fraud", bins=4, top_k=2)
    builder.add(decoded([event(i, features={"x": float(i), "c": "ab"[i % 2]}) for i in range(100)]))
    reference = builder.build(created_at_ms=0)
    config = Config()
    store = MemoryWindowStore(WindowLayout(), clock=lambda: NOW_MS)
    assembler = BatchAssembler(config, store, lambda model: reference)
    writer = WindowWriter(store, binning_from_config(config), lambda model: reference)
    chunk = [event(i, features={"x": 80.0 + i % 40, "c": "b"}, version="v2") for i in range(60)]
    assembled = assembler.assemble([0] * 60, list(range(60)), chunk, NOW_MS)
    writer.write_all(list(assembled.models.values()), NOW_MS)
    [fields] = store.read_windows("fraud", [300_000], NOW_MS)
    window = summarise(fields)[Series("v2", "stable")]

    frozen = freeze_window(reference, window, created_at_ms=5, version="v2", source="test")
    c, x = frozen.features
    assert (x.edges, x.bin_values) == (
        reference.features[1].edges,
        reference.features[1].bin_values,
    )
    assert x.counts == (0, 0, 0, 0, 0, 40, 20)  # [74, 99] holds 80..99; 100..119 overflow
    assert c.categories == ("a", "b") and c.counts == (0, 0, 0, 60)
    assert (frozen.version, frozen.events, frozen.created_at_ms) == ("v2", 60, 5)
    assert frozen.reference_id != reference.reference_id
    empty = summarise({})
    with pytest.raises(ReferenceFormatError, match="no events binned with reference"):
        freeze_window(
            reference,
            empty.get(Series("v9", "stable")) or window.__class__(Series("v9", "stable")),
            created_at_ms=5,
            version="v9",
            source="test",
        )


def test_drift_config_errors_name_the_key() -> None:
    from driftline.config import ConfigError

    with pytest.raises(ConfigError, match=r"drift.statistic = 'pzi'"):
        parse_config({"drift": {"statistic": "pzi"}})
    with pytest.raises(ConfigError, match="threshold is required for the distance statistic psi"):
        parse_config({"drift": {"statistic": "psi"}})
    with pytest.raises(ConfigError, match=r"per_feature_thresholds\['amount'\] for hellinger"):
        parse_config(
            {
                "drift": {
                    "effect_size_statistic": "hellinger",
                    "effect_size_threshold": 0.2,
                    "models": {"m": {"per_feature_thresholds": {"amount": 2}}},
                }
            }
        )
    config = parse_config(
        {
            "drift": {
                "per_feature_thresholds": {"a": 0.2, "b": 0.3},
                "models": {"m": {"per_feature_thresholds": {"a": 0.5}}},
            }
        }
    )
    assert config.drift.thresholds_for("m") == {"a": 0.5, "b": 0.3}
    assert config.drift.thresholds_for("other") == {"a": 0.2, "b": 0.3}


def _pipe_of(tmp_path: Path, data: bytes) -> tuple[Path, threading.Thread]:
    """A named pipe that a thread writes ``data`` into once, as ``<(bzcat ...)`` does."""
    pipe = tmp_path / "events.pipe"
    os.mkfifo(pipe)
    writer = threading.Thread(target=pipe.write_bytes, args=(data,))
    writer.start()
    return pipe, writer


@pytest.mark.timeout(30)
@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_baseline_build_reads_a_pipe_as_it_reads_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    """A sampled build reads its events twice and a compressed file is known by its first
    bytes, but a pipe can be read only once: it is copied first, then read like the file."""
    lines = b"".join(
        event(i, features={"x": float(i % 37), "country": f"c{i % 3}"}) + b"\n" for i in range(300)
    )
    compressions: dict[str, Callable[[bytes], bytes]] = {
        "plain": bytes,
        "gzip": gzip.compress,
        "zstd": zstd.compress,
    }
    compress = compressions[compression]
    file = tmp_path / "events.jsonl"
    file.write_bytes(compress(lines))
    copies = tmp_path / "copies"
    copies.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(copies))
    pipe, writer = _pipe_of(tmp_path, file.read_bytes())
    built = {}
    for path in (pipe, file):
        output = tmp_path / f"{path.name}.json"
        # 300 numbers a feature, 10 kept: edges from a sample, then a second pass counts.
        arguments = ["baseline", "build", "--model", "fraud", "--sample-size", "10"]
        result = CliRunner().invoke(main, [*arguments, "--output", str(output), str(path)])
        assert result.exit_code == 0, result.output
        built[path] = Reference.from_json(output.read_bytes())
    writer.join()
    assert built[pipe].features == built[file].features
    assert built[pipe].events == 300
    assert [sum(feature.counts) for feature in built[pipe].features] == [300, 300]
    assert not list(copies.iterdir())


def test_baseline_build_without_events_says_how_many_lines_were_invalid(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    other_model = event(0, model="other", features={"x": 1.0})
    events.write_bytes(b"not json\n" + event(1, features=[1.0]) + b"\n" + other_model + b"\n")
    arguments = ["baseline", "build", "--model", "fraud", "--output", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, [*arguments, str(events)])
    assert result.exit_code == 1
    assert "no events of fraud to build a reference from (2 invalid lines skipped)" in result.output
    events.write_bytes(other_model + b"\n")
    result = CliRunner().invoke(main, [*arguments, str(events)])
    assert result.exit_code == 1
    assert result.output.strip().endswith("no events of fraud to build a reference from")


@pytest.mark.timeout(30)
def test_baseline_build_names_a_damaged_pipe(tmp_path: Path) -> None:
    lines = b"".join(event(i, features={"x": float(i)}) + b"\n" for i in range(300))
    damaged = gzip.compress(lines)
    pipe, writer = _pipe_of(tmp_path, damaged[: len(damaged) // 2])
    arguments = ["baseline", "build", "--model", "fraud", "--output", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, [*arguments, str(pipe)])
    writer.join()
    assert result.exit_code == 1
    assert f"{pipe}: cannot read: damaged gzip data" in result.output
    assert not (tmp_path / "r.json").exists()
