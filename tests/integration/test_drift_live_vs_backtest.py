"""The live path and ``driftline backtest`` give the same drift transitions for the same events.

Live: a real ``driftline consume`` process reads the events from Kafka into Redis, binning them
with the reference it finds in Redis (imported with ``driftline baseline import``); an evaluator
with the drift contributor reads the Redis windows. Backtest: ``driftline backtest`` on the same
events as a JSONL file.

Both must tick at the same event times over the same data. The backtest applies, before its tick
at ``t``, exactly the events stamped before ``t``; so the live side is fed one tick at a time:
produce the events of ``[t - tick, t)``, wait until the consumer has applied them, then tick the
evaluator with its clock at ``t``. Event times start two minutes ahead of the wall clock, so no
Redis bucket (whose expiry is absolute, in event time) expires while the test runs.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from click.testing import CliRunner

from alerting.drift_figures import DriftFigures, DriftTransition
from alerting.evaluator import Evaluator
from alerting.snapshot import SnapshotCollector
from detectors.reference_cache import ReferenceCache
from detectors.stores.redis_reference_store import RedisReferenceStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config, main
from driftline.config import Config
from driftline.events import decode_event
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import produce, start_consumer, write_config

RATE_PER_S = 100
SEGMENTS = (("region", ("eu", "us")),)


def _stream(start_ms: int) -> list[bytes]:
    """3 min as usual, 3 min with f0 and f1 shifted by 1 sigma, 4 min as usual again."""
    minute = 60 * RATE_PER_S
    phases = (
        (0.0, 3 * minute, 0),
        (1.0, 3 * minute, 180_000),
        (0.0, 4 * minute, 360_000),
    )
    lines: list[bytes] = []
    for seed, (shift, count, offset_ms) in enumerate(phases):
        spec = TrafficSpec(
            "fraud",
            "v2",
            feature_count=4,
            feature_shift=shift,
            shifted_features=2,
            segments=SEGMENTS,
        )
        lines += [
            raw
            for raw, _ in synthetic_events(
                spec,
                count,
                start_ms=start_ms + offset_ms,
                rate_per_s=RATE_PER_S,
                seed=100 + seed,
                id_prefix=f"p{seed}-",
            )
        ]
    return lines


def _applied(store: RedisWindowStore) -> int:
    return sum(count for name, count in store.totals("fraud").items() if name.endswith("||events"))


def test_live_path_and_backtest_report_the_same_drift_transitions(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = stack_config(
        partitions=2,
        windows={
            "bucket_seconds": 5,
            "rollup_seconds": 30,
            "short_seconds": 60,
            "long_seconds": 300,
        },
        evaluator={"tick_seconds": 10},
        consumer={"poll_timeout_seconds": 0.05, "future_tolerance_seconds": 3600},
        models={"fraud": {"segments": ["region"]}},
        # An alarm of the sequential test holds its feature drifted for a minute: the return to
        # normal at 6 minutes alarms too, and must not hold the drift past the stream's end.
        drift={"sequential": {"hold_seconds": 60}},
    )
    config_path = write_config(config, tmp_path)
    runner = CliRunner()

    # The reference: built from v1 traffic, imported into Redis like an operator would.
    reference_events = tmp_path / "reference-events.jsonl"
    spec = TrafficSpec("fraud", "v1", feature_count=4, segments=SEGMENTS)
    reference_events.write_bytes(
        b"".join(
            raw + b"\n"
            for raw, _ in synthetic_events(spec, 20_000, start_ms=0, rate_per_s=100, seed=99)
        )
    )
    reference_path = tmp_path / "reference.json"
    for arguments in (
        [
            "baseline",
            "build",
            "--config",
            str(config_path),
            "--model",
            "fraud",
            "--output",
            str(reference_path),
            str(reference_events),
        ],
        ["baseline", "import", "--config", str(config_path), str(reference_path)],
    ):
        result = runner.invoke(main, arguments)
        assert result.exit_code == 0, result.output

    tick_ms = 10_000
    start_ms = (time.time_ns() // 1_000_000 // tick_ms + 12) * tick_ms
    lines = _stream(start_ms)
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"".join(line + b"\n" for line in lines))
    times = np.array([decode_event(line).ts for line in lines], dtype=np.int64)  # type: ignore[union-attr]

    # Backtest.
    result = runner.invoke(
        main,
        [
            "backtest",
            "--config",
            str(config_path),
            "--reference",
            str(reference_path),
            str(events_path),
        ],
    )
    assert result.exit_code == 0, result.output
    *backtest_lines, summary_line = result.stdout.splitlines()
    summary = json.loads(summary_line)
    assert summary["events_applied"] == len(lines)

    # Live.
    keys = KeySchema(config.redis.key_prefix)
    store = RedisWindowStore(redis_client, layout_from_config(config), keys)
    live: list[DriftTransition] = []
    clock = [0]
    drift = DriftFigures(
        config.drift,
        ReferenceCache(RedisReferenceStore(redis_client, keys)).reference,
        confidence_bins=config.monitoring.confidence_bins,
        on_transition=live.append,
    )
    evaluator = Evaluator(
        config, store, SnapshotCollector(), contributors=[drift], clock_ms=lambda: clock[0]
    )
    consumer = start_consumer(config_path)
    try:
        produced = 0
        at = int(times[0]) // tick_ms * tick_ms + tick_ms
        while produced < len(lines):
            end = int(np.searchsorted(times, at, side="left"))
            if end > produced:
                produce(
                    kafka_bootstrap,
                    config.topics.events,
                    lines[produced:end],
                    [b"fraud"] * (end - produced),
                )
                produced = end
            deadline = time.monotonic() + 60
            while _applied(store) < produced:
                assert consumer.poll() is None, "the consumer died"
                assert time.monotonic() < deadline, "the consumer fell behind"
                time.sleep(0.01)
            clock[0] = at
            evaluator.tick()
            at += tick_ms
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(60) == 0

    assert summary["ticks"] == evaluator.ticks
    live_lines = [transition.to_json() for transition in live]
    assert live_lines == backtest_lines
    # Not vacuous: both shifted features drifted and cleared, overall and in both regions.
    states = {(t.feature, t.state, json.dumps(t.segment)) for t in live}
    for segment in ("null", '{"region": "eu"}', '{"region": "us"}'):
        for feature in ("f0", "f1"):
            assert (feature, "drifted", segment) in states
            assert (feature, "ok", segment) in states
    assert {t.feature for t in live} == {"f0", "f1"}
    # The drift fast window (drift.fast_window_seconds, 30 s by default) and the sequential test
    # are evaluated on both sides: the sequential test raises the whole traffic's drifts (it
    # does not run per segment), dated at the crossing event; the fast window raises the
    # segments'; the long window clears them all.
    assert config.drift.fast_window_seconds == 30
    raised = {(t.window, t.segment is None) for t in live if t.state == "drifted"}
    assert raised == {("sequential", True), ("fast", False)}
    assert {t.window for t in live if t.state == "ok"} == {"long"}
    for transition in live:
        if transition.window == "sequential":
            assert transition.at_ms % tick_ms != 0, "dated at the crossing event, not the tick"
            assert transition.at_ms - (start_ms + 180_000) < 2_000, "within 200 events"
