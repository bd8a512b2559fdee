"""``driftline backtest --verdict-every``: a rollout replayed, the gate's answer at each step.

A canary goes 5 % -> 25 % -> 50 % of a model's traffic, ten minutes a step, and the gate is asked
every five minutes of event time. Whether it may answer anything but ``hold`` is arithmetic on the
generated timestamps (how many canary events precede each question), never read back from the
code under test: a good canary turns from hold to promote exactly when the minimum is reached, a
slow one from hold to rollback, and neither ever answers before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from driftline.cli import main
from driftline.events import decode_event
from tests.integration.rollout_traffic import Leg, leg_traffic

MINUTE_MS = 60_000
START_MS = 1_800_000_000_000
MINIMUM_EVENTS = 600
# (canary share, stable events per second) per ten-minute step
STEPS = ((0.05, 10), (0.25, 10), (0.5, 10))


def _rollout(latency_factor: float) -> list[bytes]:
    lines: list[bytes] = []
    for index, (share, rate) in enumerate(STEPS):
        end_ms = START_MS + (index + 1) * 10 * MINUTE_MS
        count = round(rate * 600)
        for version, deployment, events, factor in (
            ("v1", "stable", round(count * (1 - share)), 1.0),
            ("v2", "canary", round(count * share), latency_factor),
        ):
            leg = Leg("fraud", version, deployment, events, latency_factor=factor, seed=index)
            traffic = leg_traffic(
                leg, end_ms=end_ms, span_ms=10 * MINUTE_MS, id_prefix=f"s{index}-"
            )
            lines += traffic.events
    return lines


@pytest.mark.parametrize(("latency_factor", "after"), [(1.0, "promote"), (1.6, "rollback")])
def test_backtest_replays_a_rollout_and_prints_the_verdict_at_each_step(
    tmp_path: Path, latency_factor: float, after: str
) -> None:
    config = {
        "evaluator": {"tick_seconds": 60},
        "rollout": {
            "models": {
                "fraud": {
                    "minimum_events": MINIMUM_EVENTS,
                    "minimum_observation_seconds": 300,
                    "checks": [
                        {"figure": "error_ratio", "max_rise": 0.01},
                        {"figure": "latency_p99", "max_ratio": 1.2},
                    ],
                }
            }
        },
    }
    config_path = tmp_path / "driftline.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    lines = _rollout(latency_factor)
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"".join(line + b"\n" for line in lines))
    result = CliRunner().invoke(
        main,
        ["backtest", "--config", str(config_path), "--verdict-every", "300", str(events_path)],
    )
    assert result.exit_code == 0, result.output
    verdicts = [
        json.loads(line) for line in result.stdout.splitlines() if '"kind": "verdict"' in line
    ]
    canary_times = np.sort(
        np.array(
            [
                event.ts
                for event in map(decode_event, lines)
                if event.deployment == "canary"  # type: ignore[union-attr]
            ]
        )
    )
    # The first tick (a minute in) asks, then every tick on a five-minute boundary, up to the
    # tick after the last event (thirty minutes in).
    assert [v["at"] for v in verdicts] == [
        START_MS + MINUTE_MS,
        *(START_MS + minutes * MINUTE_MS for minutes in range(5, 31, 5)),
    ]
    answers = []
    for verdict in verdicts:
        assert (verdict["model"], verdict["candidate"], verdict["baseline"]) == (
            "fraud",
            "v2",
            "stable",
        )
        seen = int(np.searchsorted(canary_times, verdict["at"], side="left"))
        assert verdict["evidence"]["candidate"]["events"] == seen
        expected = after if seen >= MINIMUM_EVENTS else "hold"
        assert verdict["verdict"] == expected, (verdict["at"], seen)
        answers.append(verdict["verdict"])
    assert answers[0] == "hold" and answers[-1] == after
    if after == "rollback":
        [reason] = [r for r in verdicts[-1]["reasons"] if r["status"] == "rollback"]
        assert reason["check"] == "latency_p99"
        assert 1.5 < reason["ratio"] < 1.7


def test_timestamps_at_and_past_the_ends_of_the_range_neither_crash_nor_count(
    tmp_path: Path,
) -> None:
    """A ts past 2^63 has no event time (it raised while sorting), one of year 9999's last
    millisecond is replayed, and the verdict of the tick after it, in year 10000, names its time
    in epoch ms (it raised formatting the date)."""
    last_ms = 253_402_300_799_999
    lines = [
        b'{"event_id":"e1","ts":9223372036854775808,"model":"fraud","version":"v2"}',
        b'{"event_id":"e2","ts":%d,"model":"fraud","version":"v2","deployment":"canary"}' % last_ms,
    ]
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"".join(line + b"\n" for line in lines))
    result = CliRunner().invoke(main, ["backtest", "--verdict-every", "60", str(events_path)])
    assert result.exit_code == 0, result.output
    *verdicts, summary = map(json.loads, result.stdout.splitlines())
    assert (summary["events_applied"], summary["refused"]) == (1, {"out_of_range": 1})
    assert [v["evidence"]["to"] for v in verdicts] == [str(last_ms + 1)]
