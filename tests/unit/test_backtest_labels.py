"""``driftline backtest --labels``: labels replayed at event time, quality transitions printed."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import yaml
from click.testing import CliRunner

from alerting import metric_names as names
from alerting.snapshot import Snapshot
from consumers.label_batching import LabelAssembler
from detectors.stores.memory_store import MemoryWindowStore
from detectors.window_update import WindowLayout
from driftline.backtest import Backtest
from driftline.cli import main
from driftline.config import parse_config

START_MS = 1_700_000_000_000
DROP_MS = START_MS + 20 * 60_000
encode = msgspec.json.Encoder().encode


def _traffic(seed: int) -> tuple[list[bytes], list[bytes]]:
    """40 minutes at 10 predictions/s; a predicted fraud is right 95 % of the time until the
    20th minute, 60 % after. Each label comes 30 s after its prediction."""
    generator = np.random.default_rng(seed)
    events, labels = [], []
    for index in range(24_000):
        ts = START_MS + index * 100
        said = "fraud" if generator.random() < 0.4 else "legit"
        precision = 0.95 if ts < DROP_MS else 0.6
        right = generator.random() < (precision if said == "fraud" else 0.95)
        truth = said if right else ("legit" if said == "fraud" else "fraud")
        events.append(
            encode(
                {
                    "event_id": f"e{index}",
                    "ts": ts,
                    "model": "fraud",
                    "version": "v1",
                    "confidence": 0.9,
                    "prediction": said,
                }
            )
        )
        labels.append(encode({"event_id": f"e{index}", "label": truth, "ts": ts + 30_000}))
    order = generator.permutation(len(labels))
    return events, [labels[int(i)] for i in order]


def test_backtest_labels_prints_quality_crossings(
    tmp_path: Path, sorted_runs_written: list[Path]
) -> None:
    events, labels = _traffic(3)
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    (tmp_path / "labels.jsonl").write_bytes(b"\n".join(labels) + b"\n")
    config = {
        "models": {"fraud": {"labels": {"positive_classes": ["fraud"]}}},
        "quality": {
            "thresholds": [
                {"figure": "precision", "positive_class": "fraud", "window": "short", "below": 0.8}
            ]
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    arguments = [
        "backtest",
        "--config",
        str(tmp_path / "config.yaml"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
        str(tmp_path / "events.jsonl"),
    ]
    outputs = [CliRunner().invoke(main, arguments) for _ in range(2)]
    # The labels file (shuffled, about 3 MB with what sorting costs) sorted in runs on disk:
    outputs.append(CliRunner().invoke(main, [*arguments, "--sort-memory-mb", "1"]))
    # The same labels in two files, the second gzip-compressed: replayed together.
    half = len(labels) // 2
    (tmp_path / "labels-1.jsonl").write_bytes(b"\n".join(labels[:half]) + b"\n")
    (tmp_path / "labels-2.jsonl.gz").write_bytes(gzip.compress(b"\n".join(labels[half:])))
    two_files = [
        "--labels",
        str(tmp_path / "labels-1.jsonl"),
        "--labels",
        str(tmp_path / "labels-2.jsonl.gz"),
    ]
    outputs.append(CliRunner().invoke(main, [*arguments[:3], *two_files, arguments[-1]]))
    assert all(result.exit_code == 0 for result in outputs), outputs[0].output
    assert len(sorted_runs_written) > 1
    lines = [json.loads(line) for line in outputs[0].stdout.splitlines()]
    quality = [line for line in lines if line["kind"] == "quality"]
    crossed = [line for line in quality if line["state"] == "crossed" and line["segment"] == ""]
    assert crossed, quality
    first = crossed[0]
    # Crossed within one short window after the drop, never before it.
    assert DROP_MS < first["at"] <= DROP_MS + 300_000 + 30_000, first
    assert first["value"] < 0.8 and first["class"] == "fraud" and first["below"] == 0.8
    assert outputs[0].stdout == outputs[1].stdout, "the same input must give the same output"
    assert outputs[0].stdout == outputs[2].stdout, "sorting on disk must not change the output"
    assert outputs[0].stdout == outputs[3].stdout, "nor splitting the labels into two files"


PRICE_SERIES = {
    "model": "price",
    "version": "v1",
    "deployment": "stable",
    "segment": "",
    "window": "short",
}


def replay_regression(
    predicted: Sequence[float], actual: Sequence[float], more_labels: Sequence[bytes] = ()
) -> Snapshot:
    """Events of model ``price`` (regression, errors in units of 0.001) with the ``predicted``
    values, a label of each with the ``actual`` one (and ``more_labels``); the snapshot of a tick
    a minute in."""
    config = parse_config(
        {
            "models": {"price": {"labels": {"kind": "regression", "error_resolution": 0.001}}},
            "quality": {"minimum_labelled": 5},
        }
    )
    events = [
        encode(
            {
                "event_id": f"p{i}",
                "ts": START_MS + i * 100,
                "model": "price",
                "version": "v1",
                "prediction": value,
            }
        )
        for i, value in enumerate(predicted)
    ]
    labels = [
        encode({"event_id": f"p{i}", "label": value, "ts": START_MS + 30_000})
        for i, value in enumerate(actual)
    ]
    replay = Backtest(config, [], label_lines=[*labels, *more_labels])
    replay.replay(events)
    replay.tick(START_MS + 60_000)
    return replay.evaluator.collector.snapshot


def test_regression_labels_give_exact_mae_and_rmse() -> None:
    generator = np.random.default_rng(4)
    predicted = np.round(generator.normal(100, 10, 200), 3)
    actual = np.round(predicted + generator.normal(0, 2, 200), 3)
    snapshot = replay_regression(
        predicted.tolist(),
        actual.tolist(),
        [encode({"event_id": "p0", "label": "expensive", "ts": START_MS + 30_000})],
    )
    errors = np.abs(predicted - actual)
    mae = snapshot.value(names.MEAN_ABSOLUTE_ERROR, **PRICE_SERIES)
    rmse = snapshot.value(names.ROOT_MEAN_SQUARED_ERROR, **PRICE_SERIES)
    # Exact up to the 0.001 resolution each error is summed in.
    assert mae is not None and abs(mae - float(errors.mean())) < 1e-3
    assert rmse is not None and abs(rmse - math.sqrt(float((errors**2).mean()))) < 1e-3
    refused = snapshot.value(names.LABELS_REFUSED_TOTAL, model="price", reason="invalid_label")
    assert refused == 1.0


def test_regression_errors_too_large_to_sum_exactly_are_refused_by_reason() -> None:
    """Squared errors are summed in 64-bit integers of the resolution's square: errors beyond
    2^24 units are refused (31 of 10^7 at a resolution of 0.001 overflowed the sum, and the
    evaluator then failed on the square root of a negative number); one at the limit counts."""
    at_limit = 2**24 * 0.001
    actual = [1e7] * 31 + [-1e7] + [10.0] * 10 + [at_limit]
    snapshot = replay_regression([0.0] * len(actual), actual)
    refused = snapshot.value(names.LABELS_REFUSED_TOTAL, model="price", reason="error_out_of_range")
    assert refused == 32.0
    counted = np.array([10.0] * 10 + [at_limit])
    mae = snapshot.value(names.MEAN_ABSOLUTE_ERROR, **PRICE_SERIES)
    rmse = snapshot.value(names.ROOT_MEAN_SQUARED_ERROR, **PRICE_SERIES)
    assert mae is not None and abs(mae - float(counted.mean())) < 1e-9
    assert rmse is not None and abs(rmse - math.sqrt(float((counted**2).mean()))) < 1e-6


def test_carried_labels_count_at_their_version_and_a_malformed_one_as_the_overflow() -> None:
    """With ``join: false`` a label names its version; one no event could carry ("v|x") split
    the window's field names into another version, deployment and segment."""
    config = parse_config(
        {
            "models": {"price": {"labels": {"kind": "regression", "join": False}}},
            "quality": {"minimum_labelled": 1},
        }
    )
    versions = ["v1", "v1", "v|x", "v1|stable||x", None]
    labels = [
        encode(
            {
                "event_id": f"l{i}",
                "label": 3.0 + i,
                "prediction": 1.0,
                "model": "price",
                **({} if version is None else {"version": version}),
                "ts": START_MS + i,
            }
        )
        for i, version in enumerate(versions)
    ]
    replay = Backtest(config, [], label_lines=labels)
    replay.replay([])
    replay.tick(START_MS + 60_000)
    [fields] = replay.store.read_windows("price", [300_000], START_MS + 60_000)
    labelled = {name: count for name, count in fields.items() if name.endswith("|labelled")}
    assert labelled == {"v1|stable||labelled": 2, "__overflow__|stable||labelled": 3}
    snapshot = replay.evaluator.collector.snapshot
    assert snapshot.value(names.MEAN_ABSOLUTE_ERROR, **PRICE_SERIES) == 2.5


def test_a_kafka_time_past_the_consumers_clock_is_not_trusted() -> None:
    """A label without ts takes its message's Kafka time, which the producer sets: one near 2^63
    overflowed its record's expiry and stopped the labels consumer on every restart."""
    config = parse_config({"models": {"carry": {"labels": {"join": False}}}})
    assembler = LabelAssembler(config, MemoryWindowStore(WindowLayout(), clock=lambda: START_MS))
    label = encode(
        {"event_id": "y", "label": "a", "model": "carry", "version": "v1", "prediction": "a"}
    )
    message_ms = [2**63 - 1 - 90_000_000 + 1, START_MS + 10**12, START_MS - 5_000, -1]
    assembled = assembler.assemble([0] * 4, [0, 1, 2, 3], message_ms, [label] * 4, START_MS)
    assert not assembled.refused
    batch = assembled.models["carry"]
    assert batch.label_ms.tolist() == [START_MS, START_MS, START_MS - 5_000, START_MS]
