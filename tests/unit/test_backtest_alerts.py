"""`driftline backtest` runs the alert rules on event time: alert and dry-run rollback lines."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from driftline.cli import main
from driftline.synthetic import TrafficSpec, synthetic_events

START_MS = 1_700_000_000_000


def _events(path: Path) -> None:
    """20 minutes of stable and canary traffic at 20 events/s each; from minute 10 the canary's
    latency is ten times the stable version's; from minute 15 the canary sends 1 event/s."""
    lines: list[bytes] = []
    for seed, (version, deployment, median, start, count, rate) in enumerate(
        [
            ("v1", "stable", 20.0, START_MS, 24_000, 20.0),
            ("v2", "canary", 20.0, START_MS, 12_000, 20.0),
            ("v2", "canary", 200.0, START_MS + 600_000, 6_000, 20.0),
            ("v2", "canary", 200.0, START_MS + 900_000, 300, 1.0),
        ]
    ):
        spec = TrafficSpec(
            "shop",
            version,
            deployment,
            feature_count=1,
            latency_median_ms=median,
            latency_sigma=0.3,
        )
        lines += [
            raw
            for raw, _ in synthetic_events(
                spec, count, start_ms=start, rate_per_s=rate, seed=seed, id_prefix=f"{seed}-"
            )
        ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_backtest_prints_the_pages_and_rollbacks_the_rules_would_have_caused(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events.jsonl"
    _events(events)
    config = tmp_path / "driftline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "windows": {
                    "bucket_seconds": 10,
                    "rollup_seconds": 60,
                    "short_seconds": 60,
                    "long_seconds": 600,
                },
                "evaluator": {"tick_seconds": 10},
                "models": {"shop": {"stable_version": "v1"}},
                "rules": [
                    {
                        "name": "canary-p99-vs-stable",
                        "metric": "driftline_latency_seconds",
                        "match": {"quantile": "0.99", "deployment": "canary"},
                        "relative": {"reference": {"deployment": "stable"}},
                        "comparison": ">",
                        "threshold": 2,
                        "for": "1m",
                        "min_samples": 200,
                        "action": "rollback",
                    }
                ],
                "alerting": {"rollback": {"dry_run": False}},
            }
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["backtest", "--config", str(config), str(events)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    alerts = [(line["state"], line["at"] - START_MS) for line in lines if line["kind"] == "alert"]
    # Degraded from 600 s: the first tick whose short window sees it breaches (610 s), `for`
    # 1 m later it fires; at 900 s the canary thins to 1 event/s: below 200 events in the
    # 60 s window from some tick after 900 s, the alert ends as nodata.
    assert [state for state, _ in alerts] == ["pending", "firing", "nodata"]
    pending_at, firing_at, nodata_at = (at for _, at in alerts)
    assert pending_at == 610_000 and firing_at == pending_at + 60_000
    assert 900_000 < nodata_at <= 900_000 + 60_000
    [rollback] = [line for line in lines if line["kind"] == "rollback"]
    assert rollback == {
        "kind": "rollback",
        "model": "shop",
        "from_version": "v2",
        "to_version": "v1",
        "rule": "canary-p99-vs-stable",
        "at": START_MS + firing_at,
        "dry_run": True,
    }
    firing = next(line for line in lines if line["kind"] == "alert" and line["state"] == "firing")
    assert firing["value"] > 2 and (firing["model"], firing["version"]) == ("shop", "v2")
