"""Golden drift streams through the embedded backtest path (the live path's code, at event time).

Seeded synthetic streams, river-style: the same seed gives the same events, so the expected
transitions below are exact. Every stream is replayed through ``driftline.backtest.Backtest``:
decoding, assembly, reference binning, the in-memory window store, statistics, decisions and the
evaluator, as ``driftline consume`` + ``driftline evaluate`` run them, with the default config.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from alerting import metric_names as names
from alerting.drift_figures import DriftTransition
from detectors.reference import Reference
from detectors.reference_builder import ReferenceBuilder
from driftline import time_ordered_lines
from driftline.backtest import Backtest
from driftline.cli import main
from driftline.config import Config
from driftline.events import InferenceEvent, decode_event
from driftline.line_files import zstd
from driftline.synthetic import TrafficSpec, synthetic_events

START_MS = 1_700_000_000_000
SHORT_WINDOW_MS = Config().windows.short_seconds * 1000
FAST_WINDOW_MS = Config().drift.fast_window_seconds * 1000
_encoder = msgspec.json.Encoder()


def build_reference(model: str, lines: Sequence[bytes]) -> Reference:
    builder = ReferenceBuilder(model)
    events = [decode_event(line) for line in lines]
    builder.add([event for event in events if isinstance(event, InferenceEvent)])
    return builder.build(created_at_ms=START_MS - 86_400_000, source="golden")


WINDOWS_ONLY = Config.model_validate({"drift": {"sequential": {"enabled": False}}})
"""The histograms alone, without the per-value sequential test."""


SERIES = {"model": "fraud", "version": "v2", "deployment": "stable", "segment": ""}
"""The labels of the whole traffic of :func:`normal_stream`'s series."""


def replay(
    lines: Sequence[bytes], reference: Reference, config: Config | None = None
) -> tuple[list[DriftTransition], Backtest]:
    transitions: list[DriftTransition] = []
    backtest = Backtest(config or Config(), [reference], on_transition=transitions.append)
    backtest.replay(lines)
    return transitions, backtest


def normal_stream(
    count: int,
    *,
    start_ms: int,
    rate_per_s: float,
    seed: int,
    shift: float = 0.0,
    shifted: int = 0,
    features: int = 20,
    version: str = "v2",
    prefix: str = "",
) -> list[bytes]:
    spec = TrafficSpec(
        "fraud", version, feature_count=features, feature_shift=shift, shifted_features=shifted
    )
    return [
        raw
        for raw, _ in synthetic_events(
            spec, count, start_ms=start_ms, rate_per_s=rate_per_s, seed=seed, id_prefix=prefix
        )
    ]


def mixed_stream(
    count: int,
    *,
    start_ms: int,
    rate_per_s: float,
    seed: int,
    country_weights: Sequence[float],
    amount_missing: float,
    prefix: str,
) -> Iterator[bytes]:
    """A categorical feature (``country``), a numeric one with missing values (``amount``) and
    an untouched numeric one (``age``)."""
    rng = np.random.default_rng(seed)
    countries = np.array(["DE", "FR", "IT", "ES", "NL"])
    chosen = rng.choice(countries, size=count, p=np.asarray(country_weights))
    amount = rng.lognormal(3.0, 1.0, count).round(2)
    missing = rng.random(count) < amount_missing
    age = rng.normal(40.0, 12.0, count).round(1)
    for index in range(count):
        yield _encoder.encode(
            {
                "event_id": f"{prefix}{index}",
                "ts": start_ms + int(index * 1000 / rate_per_s),
                "model": "shop",
                "version": "v7",
                "latency_ms": 12.0,
                "features": {
                    "country": str(chosen[index]),
                    "amount": None if missing[index] else float(amount[index]),
                    "age": float(age[index]),
                },
            }
        )


def drifted(transitions: Sequence[DriftTransition]) -> dict[str, int]:
    """Feature -> event time of its first "drifted" transition."""
    first: dict[str, int] = {}
    for transition in transitions:
        if transition.state == "drifted":
            first.setdefault(transition.feature, transition.at_ms)
    return first


@pytest.fixture(scope="module")
def normal_reference() -> Reference:
    return build_reference(
        "fraud", normal_stream(50_000, start_ms=START_MS, rate_per_s=1000, seed=1, version="v1")
    )


@pytest.fixture(scope="module")
def small_reference() -> Reference:
    """Five features, for the streams that need fewer."""
    return build_reference(
        "fraud",
        normal_stream(20_000, start_ms=START_MS, rate_per_s=100, seed=2, features=5, version="v1"),
    )


@pytest.mark.parametrize("sequential", [True, False], ids=["default", "windows_only"])
def test_half_sigma_shift_in_three_of_twenty_features_is_caught_for_exactly_those(
    normal_reference: Reference, sequential: bool
) -> None:
    change_ms = START_MS + 360_000
    before = normal_stream(36_000, start_ms=START_MS, rate_per_s=100, seed=11)
    after = normal_stream(
        36_000, start_ms=change_ms, rate_per_s=100, seed=12, shift=0.5, shifted=3, prefix="b"
    )
    transitions, _ = replay(before + after, normal_reference, None if sequential else WINDOWS_ONLY)

    first = drifted(transitions)
    assert sorted(first) == ["f0", "f1", "f2"]
    assert all(t.state == "drifted" for t in transitions), "nothing cleared"
    # The issue asks for one short window (5 min); the 30 s fast window raises within its length,
    # and the sequential test, judging every value, within 400 events (4 s) at 100 events/s.
    within_ms = 4_000 if sequential else FAST_WINDOW_MS
    for feature, at_ms in first.items():
        assert change_ms < at_ms <= change_ms + within_ms, feature
    for transition in transitions:
        assert (transition.model, transition.version, transition.deployment) == (
            "fraud",
            "v2",
            "stable",
        )
        assert transition.segment is None
        assert transition.value is not None and transition.value >= transition.threshold
        if sequential:
            assert (transition.stat, transition.window) == ("cusum", "sequential")
            # 20 features at 1,000 events/s, one false alarm a day: Siegmund's threshold, 20.1,
            # raised by the fitted factors (1 give or take sampling noise for normal features).
            assert 20.1 <= transition.threshold < 20.1 * 1.05
        else:
            assert (transition.stat, transition.threshold, transition.window) == (
                "psi",
                0.1,
                "fast",
            )


def test_stationary_stream_of_half_a_million_events_raises_nothing(
    small_reference: Reference,
) -> None:
    lines = normal_stream(500_000, start_ms=START_MS, rate_per_s=500, seed=21, features=5)
    transitions, backtest = replay(lines, small_reference)

    assert transitions == []
    assert backtest.summary.applied == 500_000
    assert backtest.summary.ticks == 200
    # Not vacuous: at the last tick every feature had data and was decided "not drifted".
    snapshot = backtest.evaluator.collector.snapshot
    for item in ("f0", "f1", "f2", "f3", "f4", "@prediction", "@confidence"):
        assert snapshot.value(names.DRIFTED, **SERIES, feature=item) == 0, item
        short = snapshot.value(names.DRIFT_SAMPLES, **SERIES, window="short", feature=item)
        assert short == 145_000  # the 290 s of events before the last tick
        fast = snapshot.value(names.DRIFT_SAMPLES, **SERIES, window="fast", feature=item)
        assert fast == 10_000  # 20 s: the fast window's newest bucket starts at the last tick
    assert snapshot.value(names.DRIFT_SHARE, **SERIES) == 0.0


USUAL_COUNTRIES = (0.4, 0.3, 0.15, 0.1, 0.05)


@pytest.mark.parametrize(
    ("seed", "after", "changed"),
    [
        (31, {"country_weights": (0.2, 0.3, 0.15, 0.1, 0.25), "amount_missing": 0.01}, "country"),
        (41, {"country_weights": USUAL_COUNTRIES, "amount_missing": 0.3}, "amount"),
    ],
    ids=["categorical_frequency_shift", "missing_value_surge"],
)
def test_a_change_of_one_feature_is_caught_for_that_feature_only(
    seed: int, after: dict[str, Any], changed: str
) -> None:
    usual = {"country_weights": USUAL_COUNTRIES, "amount_missing": 0.01}
    reference = build_reference(
        "shop",
        list(
            mixed_stream(20_000, start_ms=START_MS, rate_per_s=100, seed=seed, **usual, prefix="r")
        ),
    )
    change_ms = START_MS + 360_000
    lines = [
        *mixed_stream(
            36_000, start_ms=START_MS, rate_per_s=100, seed=seed + 1, **usual, prefix="a"
        ),
        *mixed_stream(
            36_000, start_ms=change_ms, rate_per_s=100, seed=seed + 2, **after, prefix="b"
        ),
    ]
    transitions, _ = replay(lines, reference)

    first = drifted(transitions)
    assert list(first) == [changed]
    assert change_ms < first[changed] <= change_ms + FAST_WINDOW_MS


@pytest.mark.parametrize("sequential", [True, False], ids=["default", "windows_only"])
def test_a_drift_clears_once_both_windows_are_back_to_normal(
    small_reference: Reference, sequential: bool
) -> None:
    """Any window raises drift (the default: the sequential test first, else the fast window);
    it clears only when all have."""
    shifted_ms = START_MS + 360_000
    back_ms = shifted_ms + 360_000
    lines = [
        *normal_stream(18_000, start_ms=START_MS, rate_per_s=50, seed=51, features=5),
        *normal_stream(
            18_000,
            start_ms=shifted_ms,
            rate_per_s=50,
            seed=52,
            features=5,
            shift=1.0,
            shifted=1,
            prefix="b",
        ),
        *normal_stream(36_000, start_ms=back_ms, rate_per_s=50, seed=53, features=5, prefix="c"),
    ]
    reference = small_reference
    transitions, backtest = replay(lines, reference, None if sequential else WINDOWS_ONLY)

    assert [(t.feature, t.state) for t in transitions] == [("f0", "drifted"), ("f0", "ok")]
    alarms = {
        feature: backtest.evaluator.collector.snapshot.value(
            names.SEQUENTIAL_ALARMS_TOTAL, **SERIES, feature=feature
        )
        for feature in ("f0", "f1", "f2", "f3", "f4")
    }
    if sequential:
        # The shift and the return: at least one alarm each; the unchanged features none.
        assert alarms["f0"] is not None and alarms["f0"] >= 2
        assert [alarms[f] for f in ("f1", "f2", "f3", "f4")] == [None] * 4
        # Six minutes apart, more than the hold: two episodes, two reports of drift.
        episodes = backtest.evaluator.collector.snapshot.value(
            names.SEQUENTIAL_EPISODES_TOTAL, **SERIES, feature="f0"
        )
        assert episodes == 2
        # The summary counts them too, over every feature.
        assert backtest.summary.sequential_alarms == alarms["f0"]
        assert backtest.summary.sequential_episodes == 2
    else:
        assert set(alarms.values()) == {None}
        assert backtest.summary.sequential_alarms == backtest.summary.sequential_episodes == 0
    raised, cleared = transitions
    if sequential:
        # Dated at the event that crossed the threshold: within 100 events (2 s) of the shift.
        assert raised.window == "sequential" and shifted_ms < raised.at_ms <= shifted_ms + 2_000
    else:
        assert raised.window == "fast" and shifted_ms < raised.at_ms <= shifted_ms + FAST_WINDOW_MS
    # The long window (one hour) holds the shifted six minutes until their share is small.
    assert cleared.window == "long" and cleared.at_ms > back_ms + SHORT_WINDOW_MS


def test_a_blip_only_the_sequential_test_sees_clears_after_the_hold(
    small_reference: Reference,
) -> None:
    """Five seconds of a 1.5 sd shift: too short for any window's histogram, an alarm of the
    sequential test, which holds the feature drifted for drift.sequential.hold_seconds."""
    blip_ms = START_MS + 360_000
    after_ms = blip_ms + 5_000
    lines = [
        *normal_stream(36_000, start_ms=START_MS, rate_per_s=100, seed=71, features=5),
        *normal_stream(
            500,
            start_ms=blip_ms,
            rate_per_s=100,
            seed=72,
            features=5,
            shift=1.5,
            shifted=1,
            prefix="b",
        ),
        *normal_stream(60_000, start_ms=after_ms, rate_per_s=100, seed=73, features=5, prefix="c"),
    ]
    transitions, backtest = replay(lines, small_reference)

    assert [(t.feature, t.state, t.window) for t in transitions] == [
        ("f0", "drifted", "sequential"),
        ("f0", "ok", "sequential"),
    ]
    raised, cleared = transitions
    assert blip_ms < raised.at_ms < after_ms and raised.stat == "cusum"
    # Raised as a shift upwards; cleared with the episode netting no shift: the blip's end
    # moved the running mean back.
    assert raised.shift_sd is not None and raised.shift_sd >= 1.0
    assert cleared.shift_sd == 0.0
    snapshot = backtest.evaluator.collector.snapshot
    assert snapshot.value(names.SEQUENTIAL_EPISODES_TOTAL, **SERIES, feature="f0") == 1
    assert snapshot.value(names.SEQUENTIAL_SHIFT, **SERIES, feature="f0") is None  # not held
    # A minute after the blip, still within the hold: the gauge says the blip has passed.
    _, held = replay(lines[: 36_000 + 500 + 6_000], small_reference)
    snapshot = held.evaluator.collector.snapshot
    assert snapshot.value(names.DRIFTED, **SERIES, feature="f0") == 1
    assert snapshot.value(names.SEQUENTIAL_SHIFT, **SERIES, feature="f0") == 0.0
    # Cleared at the first tick more than the hold after the episode's last alarm.
    hold_ms = Config().drift.sequential.hold_seconds * 1000
    assert raised.at_ms + hold_ms < cleared.at_ms <= after_ms + hold_ms + backtest.tick_ms
    assert cleared.at_ms % backtest.tick_ms == 0


def _write(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_backtest_command_output_is_byte_identical_and_independent_of_file_order(
    tmp_path: Path, small_reference: Reference, sorted_runs_written: list[Path]
) -> None:
    change_ms = START_MS + 300_000
    lines = [
        *normal_stream(15_000, start_ms=START_MS, rate_per_s=50, seed=61, features=5),
        *normal_stream(
            10_000,
            start_ms=change_ms,
            rate_per_s=50,
            seed=62,
            features=5,
            shift=1.0,
            shifted=2,
            prefix="b",
        ),
        b'{"event_id": "bad"}',
        b"not json",
    ]
    reference = small_reference
    reference_path = tmp_path / "reference.json"
    reference_path.write_text(reference.to_json(), encoding="utf-8")
    shuffled = list(lines)
    random.Random(64).shuffle(shuffled)
    # Three partitions' files, each in order, compressed: merged as they are read.
    partitions = []
    for number, compress in enumerate((gzip.compress, zstd.compress, gzip.compress)):
        partition = tmp_path / f"partition-{number}.jsonl.compressed"
        partition.write_bytes(compress(b"".join(line + b"\n" for line in lines[number::3])))
        partitions.append(str(partition))
    runner = CliRunner()
    outputs = []
    for name, content, sort_memory_mb in (
        ("a.jsonl", lines, 256),
        ("b.jsonl", lines, 256),
        ("c.jsonl", shuffled, 256),  # sorted in memory
        ("d.jsonl", shuffled, 1),  # about 10 MB: sorted in runs on disk, then merged
        ("e.pipe", shuffled, 1),  # as `backtest <(bzcat ...)` gives: copied, then sorted on disk
        ("partitions", [], 1),
    ):
        path = tmp_path / name
        if name.endswith(".pipe"):
            os.mkfifo(path)
            threading.Thread(target=_write, args=(path, content), daemon=True).start()
        elif content:
            _write(path, content)
        files = partitions if name == "partitions" else [str(path)]
        sort_memory = ["--sort-memory-mb", str(sort_memory_mb)]
        runs_before = len(sorted_runs_written)
        result = runner.invoke(
            main, ["backtest", "--reference", str(reference_path), *sort_memory, *files]
        )
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout_bytes)
        runs = len(sorted_runs_written) - runs_before
        if sort_memory_mb == 1 and name != "partitions":
            assert runs > 5, "the shuffled file must have been sorted on disk"
        if name == "partitions":
            assert runs == 0, "files in order are merged as they are read, not sorted"
    assert len(outputs) == 6 and len(set(outputs)) == 1

    records = [json.loads(line) for line in outputs[0].decode().splitlines()]
    transitions, summary = records[:-1], records[-1]
    assert [(r["feature"], r["state"]) for r in transitions] == [
        ("f0", "drifted"),
        ("f1", "drifted"),
    ]
    assert list(transitions[0]) == [
        "kind",
        "model",
        "version",
        "deployment",
        "segment",
        "feature",
        "state",
        "at",
        "stat",
        "value",
        "threshold",
        "window",
        "shift_sd",  # sequential transitions only
    ]
    # Both shifted features moved up by 1 sd; the transitions say so.
    assert [(r["window"], r["shift_sd"]) for r in transitions] == [("sequential", 1.0)] * 2
    assert summary["kind"] == "summary"
    assert summary["lines"] == 25_002 and summary["events_applied"] == 25_000
    assert summary["refused"] == {"bad_json": 1, "missing_field": 1}
    assert summary["transitions"] == {"drifted": 2, "ok": 0}
    # One lasting shift in each of the two features: one episode each.
    assert summary["sequential"]["episodes"] == 2
    assert [d["feature"] for d in summary["drifted_at_end"]] == ["f0", "f1"]


def test_backtest_command_takes_labels_and_refuses_bad_references_clearly(tmp_path: Path) -> None:
    events = _write(
        tmp_path / "events.jsonl", normal_stream(10, start_ms=START_MS, rate_per_s=10, seed=71)
    )
    labels = _write(tmp_path / "labels.jsonl", [b'{"event_id": "e", "label": true}'])
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "driftline/reference/v1", "model": "fraud"}', encoding="utf-8")
    runner = CliRunner()

    # Labels replay (tests/unit/test_backtest_labels.py): a label of no known event is counted.
    result = runner.invoke(main, ["backtest", "--labels", str(labels), str(events)])
    assert result.exit_code == 0, result.output
    assert '"kind": "summary"' in result.output

    result = runner.invoke(main, ["backtest", "--reference", str(broken), str(events)])
    assert result.exit_code == 1
    assert f"--reference {broken}: reference.features: expected a list" in result.output

    # A file given twice would be replayed twice.
    same = tmp_path / "alias.jsonl"
    same.symlink_to(events)
    result = runner.invoke(main, ["backtest", str(events), str(same)])
    assert result.exit_code == 2
    assert f"Invalid value for 'EVENTS_PATHS...': {same} is given twice" in result.output
    result = runner.invoke(
        main, ["backtest", "--labels", str(labels), "--labels", str(labels), str(events)]
    )
    assert result.exit_code == 2
    assert f"Invalid value for '--labels': {labels} is given twice" in result.output


def test_backtest_command_says_when_it_cannot_sort_a_file(
    tmp_path: Path, small_reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = normal_stream(5_000, start_ms=START_MS, rate_per_s=50, seed=81, features=5)
    random.Random(82).shuffle(lines)
    events = _write(tmp_path / "events.jsonl", lines)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    result = CliRunner().invoke(main, ["backtest", "--sort-memory-mb", "1", str(events)])
    assert result.exit_code == 1
    # The error names the folder the runs could not be written to.
    assert f"{tmp_path / 'no-such-folder'}/driftline-sort-" in result.output
    assert ": cannot read or sort: No such file or directory" in result.output
    assert '"kind"' not in result.output, "nothing is replayed"


def test_backtest_command_names_a_file_that_changes_while_it_is_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = normal_stream(5_000, start_ms=START_MS, rate_per_s=50, seed=84, features=5)
    events = _write(tmp_path / "events.jsonl", lines[:4_000])  # 1.7 MB: streamed, read twice
    scan = time_ordered_lines._scan

    def scan_then_append(path: Path, *arguments: Any) -> Any:
        scanned = scan(path, *arguments)
        with path.open("ab") as file:  # as an export still being written
            file.writelines(line + b"\n" for line in lines[4_000:])
        return scanned

    monkeypatch.setattr(time_ordered_lines, "_scan", scan_then_append)
    result = CliRunner().invoke(main, ["backtest", "--sort-memory-mb", "1", str(events)])
    assert result.exit_code == 1
    assert (
        f"{events}: cannot replay: changed while being read: 4,000 lines at first, 5,000 now"
        in result.output
    )
    assert '"kind": "summary"' not in result.output


def test_backtest_command_names_a_damaged_compressed_file(tmp_path: Path) -> None:
    lines = normal_stream(5_000, start_ms=START_MS, rate_per_s=50, seed=83, features=5)
    whole = _write(tmp_path / "whole.jsonl", lines[:2_500])
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines[2_500:]))[:-100])
    result = CliRunner().invoke(main, ["backtest", str(whole), str(truncated)])
    assert result.exit_code == 1
    assert f"{truncated}: cannot read or sort: damaged gzip data (Compressed file ended" in (
        result.output
    )
    assert '"kind"' not in result.output, "nothing is replayed"
