"""The built-in rule engine: exact state sequences, nodata on thin traffic, relative rules."""

from __future__ import annotations

import doctest
import math
from collections.abc import Sequence
from typing import Any

import pytest

import alerting.notifiers
import alerting.rule_conditions
import alerting.rule_export
import driftline.alerting_config
from alerting import metric_names as names
from alerting.alert_replay import AlertReplay
from alerting.rule_engine import RuleEngine, check_rules, render
from alerting.rule_export import go_template
from alerting.snapshot import Snapshot
from driftline.alerting_config import AlertingConfig, RuleConfig
from driftline.config import ConfigError, parse_config

ALERTING = AlertingConfig()


def _rule(**fields: Any) -> RuleConfig:
    base: dict[str, Any] = {
        "name": "p99",
        "metric": "driftline_latency_seconds",
        "match": {"quantile": "0.99"},
        "comparison": ">",
        "threshold": 0.2,
        "min_samples": 10,
    }
    base.update(fields)
    return RuleConfig.model_validate(base)


def _snapshot(
    at_ms: int,
    series: Sequence[tuple[str, str, float, int]],
    windows: Sequence[str] = ("short",),
) -> Snapshot:
    """``(version, deployment, p99 seconds, events)`` per series, the same in every window."""
    snapshot = Snapshot(taken_at_ms=at_ms)
    for version, deployment, p99, events in series:
        for window in windows:
            labels = ("shop", version, deployment, "", window)
            snapshot.add(names.LATENCY, (*labels, "0.99"), p99)
            snapshot.add(names.WINDOW_EVENTS, labels, events)
    return snapshot


def _run(
    engine: RuleEngine, steps: Sequence[tuple[float, int]], version: str = "v2"
) -> list[tuple[int, str]]:
    """Feed one series ``(p99, events)`` per second; return ``(second, new state)``."""
    seen = []
    for second, (p99, events) in enumerate(steps):
        snapshot = _snapshot(second * 1000, [(version, "canary", p99, events)])
        for event in engine.evaluate(snapshot):
            seen.append((second, event.state))
    return seen


def test_for_and_keep_firing_for_follow_prometheus() -> None:
    engine = RuleEngine([_rule(**{"for": "3s", "keep_firing_for": "2s"})], ALERTING)
    bad, good = (0.5, 100), (0.1, 100)
    steps = [good, bad, bad, bad, bad, good, bad, good, good, good, good]
    assert _run(engine, steps) == [
        (1, "pending"),  # active since 1 s
        (4, "firing"),  # 4 - 1 >= 3 s
        # 5: condition gone, kept firing (keep_firing_for 2 s from 5); 6: breach again resets it
        (9, "resolved"),  # gone since 7, 9 - 7 >= 2 s
        (10, "inactive"),
    ]


def test_low_traffic_is_nodata_and_resets_for() -> None:
    engine = RuleEngine([_rule(**{"for": "2s"})], ALERTING)
    bad, thin = (0.5, 100), (0.5, 9)
    assert _run(engine, [bad, bad, thin, bad, bad, bad]) == [
        (0, "pending"),
        (2, "nodata"),  # 9 events < min_samples 10: never a breach, and `for` starts over
        (3, "pending"),
        (5, "firing"),
    ]
    [alert] = engine.alerts.values()
    assert alert.fired_at_ms == 5000


def test_firing_alert_that_runs_out_of_data_ends_as_nodata() -> None:
    engine = RuleEngine([_rule(**{"keep_firing_for": "1s"})], ALERTING)
    changes = _run(engine, [(0.5, 100), (0.5, 3), (0.5, 3), (0.5, 3)])
    assert changes == [(0, "firing"), (2, "nodata")]


def test_missing_series_is_nodata_then_forgotten() -> None:
    engine = RuleEngine([_rule()], ALERTING)
    engine.evaluate(_snapshot(0, [("v2", "canary", 0.5, 100)]))
    [event] = engine.evaluate(_snapshot(1000, []))
    assert (event.state, event.previous, event.reason) == ("nodata", "firing", "no series")
    assert engine.evaluate(_snapshot(3_602_000, [])) == []
    assert engine.alerts == {}


def test_canary_against_stable_ratio_and_ambiguous_reference() -> None:
    rule = _rule(
        match={"quantile": "0.99", "deployment": "canary"},
        relative={"reference": {"deployment": "stable"}},
        threshold=1.5,
    )
    engine = RuleEngine([rule], ALERTING)
    [event] = engine.evaluate(_snapshot(0, [("v1", "stable", 0.1, 50), ("v2", "canary", 0.2, 50)]))
    assert event.state == "firing" and event.value == pytest.approx(2.0)
    assert event.labels == {
        "model": "shop",
        "version": "v2",
        "deployment": "canary",
        "segment": "",
        "quantile": "0.99",
    }
    # Two stable versions: no single reference, so no data (PromQL errors out: no alert either).
    [event] = engine.evaluate(
        _snapshot(
            1000, [("v1", "stable", 0.1, 50), ("v0", "stable", 0.1, 50), ("v2", "canary", 0.2, 50)]
        )
    )
    assert event.state == "nodata" and "2 reference series" in event.reason
    # A thin reference is no data too (the alert stays in nodata: no new event).
    assert (
        engine.evaluate(_snapshot(2000, [("v1", "stable", 0.1, 5), ("v2", "canary", 0.2, 50)]))
        == []
    )
    [alert] = engine.alerts.values()
    assert alert.state == "nodata" and alert.reason.startswith("reference: short window: 5")


def test_drop_from_reference() -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "confidence-drop",
            "metric": "driftline_confidence_mean_ratio",
            "match": {"deployment": "canary"},
            "comparison": ">",
            "threshold": 0.05,
            "relative": {"reference": {"deployment": "stable"}, "mode": "drop"},
            "min_samples": 1,
        }
    )
    snapshot = Snapshot(taken_at_ms=0)
    for version, deployment, confidence in (("v1", "stable", 0.9), ("v2", "canary", 0.8)):
        labels = ("shop", version, deployment, "", "short")
        snapshot.add(names.CONFIDENCE_MEAN, labels, confidence)
        snapshot.add(names.WINDOW_EVENTS, labels, 100)
    [event] = RuleEngine([rule], ALERTING).evaluate(snapshot)
    assert event.state == "firing" and event.value == pytest.approx(0.1)


def test_both_windows_must_breach() -> None:
    engine = RuleEngine([_rule(windows="both")], ALERTING)
    snapshot = _snapshot(0, [("v2", "canary", 0.5, 100)], windows=("short",))
    labels = ("shop", "v2", "canary", "", "long")
    snapshot.add(names.LATENCY, (*labels, "0.99"), 0.1)
    snapshot.add(names.WINDOW_EVENTS, labels, 100)
    assert engine.evaluate(snapshot) == []  # long window fine: stays inactive
    [event] = engine.evaluate(_snapshot(1000, [("v2", "canary", 0.5, 100)], ("short", "long")))
    assert event.state == "firing" and dict(event.values) == {"short": 0.5, "long": 0.5}


def test_windowless_metric_guarded_by_window_events() -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "drift-share",
            "metric": "driftline_drift_share_ratio",
            "comparison": ">",
            "threshold": 0.3,
            "windows": "both",
            "min_samples": 100,
        }
    )
    check_rules([rule])
    snapshot = Snapshot(taken_at_ms=0)
    snapshot.add(names.DRIFT_SHARE, ("shop", "v2", "canary", ""), 0.5)
    snapshot.add(names.WINDOW_EVENTS, ("shop", "v2", "canary", "", "short"), 100)
    snapshot.add(names.WINDOW_EVENTS, ("shop", "v2", "canary", "", "long"), 99)
    engine = RuleEngine([rule], ALERTING)
    [event] = engine.evaluate(snapshot)
    assert event.state == "nodata" and "long window: 99 events" in event.reason


def test_quality_rule_counts_labels_not_events() -> None:
    """ "Roll back the canary if its precision falls below 0.90 for two hours": the guard counts
    labelled predictions, which arrive later and fewer than events."""
    rule = RuleConfig.model_validate(
        {
            "name": "canary-precision",
            "metric": "driftline_precision_ratio",
            "match": {"deployment": "canary", "class": "fraud"},
            "comparison": "<",
            "threshold": 0.9,
            "for": "2h",
            "windows": "long",
            "min_samples": 200,
            "samples_metric": "driftline_window_labels",
            "action": "rollback",
        }
    )
    check_rules([rule])
    engine = RuleEngine([rule], ALERTING)
    seen = []
    for minute in range(0, 181, 10):
        snapshot = Snapshot(taken_at_ms=minute * 60_000)
        series = ("shop", "v2", "canary", "", "long")
        snapshot.add(names.PRECISION, (*series, "fraud"), 0.8)
        snapshot.add(names.WINDOW_EVENTS, series, 100_000)
        snapshot.add(names.WINDOW_LABELS_COUNT, series, 150 if minute < 30 else 400)
        seen += [(minute, event.state, event.reason) for event in engine.evaluate(snapshot)]
    assert seen == [
        (0, "nodata", "long window: 150 driftline_window_labels < min_samples 200"),
        (30, "pending", ""),
        (150, "firing", ""),
    ]
    with pytest.raises(ConfigError, match="samples_metric = 'driftline_models'"):
        check_rules([rule.model_copy(update={"samples_metric": "driftline_models"})])


def test_alert_state_samples() -> None:
    engine = RuleEngine([_rule()], ALERTING)
    snapshot = _snapshot(0, [("v2", "canary", 0.5, 100), ("v1", "stable", 0.1, 3)])
    engine.evaluate(snapshot)
    engine.add_samples(snapshot)
    labels = {"rule": "p99", "model": "shop", "segment": "", "feature": ""}
    canary = {**labels, "version": "v2", "deployment": "canary"}
    stable = {**labels, "version": "v1", "deployment": "stable"}
    assert snapshot.value(names.ALERT_STATE, **canary, state="firing") == 1
    assert snapshot.value(names.ALERT_STATE, **stable, state="nodata") == 1
    assert snapshot.value(names.ALERT_VALUE, **canary, window="short") == 0.5
    assert engine.healthy_versions(snapshot) == {}  # v2 fires; v1 has 3 events < 10


def test_rule_templates_render_alike_in_both_paths() -> None:
    rule = _rule(summary="{model} {version} p99 {value:.3f}s > {threshold}s ({rule}, {quantile})")
    labels = {"model": "shop", "version": "v2", "quantile": "0.99"}
    assert render(rule.summary, rule, labels, 0.4, "short") == (
        "shop v2 p99 0.400s > 0.2s (p99, 0.99)"
    )
    assert go_template(rule.summary, rule) == (
        '{{ $labels.model }} {{ $labels.version }} p99 {{ printf "%.3f" $value }}s > 0.2s '
        "(p99, {{ $labels.quantile }})"
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"match": {"quantile": "0.99", "stat": "x"}}, "rules.p99.match.stat"),
        ({"match": {}}, "rules.p99.match.quantile: driftline_latency_seconds is split by"),
        ({"metric": "driftline_models"}, "rules.p99.min_samples"),
    ],
)
def test_rules_are_checked_against_the_catalogue(rule: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        check_rules([_rule(**rule)])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"threshold": "high"}, "rules.p99.threshold = 'high'"),
        ({"for": "5 minutes"}, "rules.p99.for = '5 minutes'"),
        ({"comparison": "=="}, "rules.p99.comparison = '=='"),
        ({"summary": "{model} {nope}"}, "rules.p99.summary"),
        ({"labels": {"action": "x"}}, "rules.p99.labels"),
        (
            {"relative": {"reference": {"deployment": "stable"}, "mode": "percent"}},
            "rules.p99.relative.mode = 'percent'",
        ),
        ({"windows": "all"}, "rules.p99.windows = 'all'"),
        ({"min_samples": -1}, "rules.p99.min_samples = -1"),
    ],
)
def test_config_errors_name_the_rule_and_key(data: dict[str, Any], expected: str) -> None:
    rule = {
        "name": "p99",
        "metric": "driftline_latency_seconds",
        "comparison": ">",
        "threshold": 0.2,
        **data,
    }
    with pytest.raises(ConfigError) as raised:
        parse_config({"rules": [rule]})
    assert expected in str(raised.value)


def test_duplicate_rule_names_and_alerting_errors() -> None:
    rule = {"name": "p99", "metric": "m", "comparison": ">", "threshold": 1}
    with pytest.raises(ConfigError, match="two rules are named 'p99'"):
        parse_config({"rules": [rule, rule]})
    with pytest.raises(ConfigError, match=r"alerting\.rollback\.cooldown_seconds = -1"):
        parse_config({"alerting": {"rollback": {"cooldown_seconds": -1}}})
    with pytest.raises(ConfigError, match=r"rollback\.actions\.0\.argo_rollouts\.namespace"):
        parse_config({"alerting": {"rollback": {"actions": [{"type": "argo_rollouts"}]}}})


def test_replay_prints_alert_and_rollback_lines() -> None:
    config = parse_config(
        {
            "models": {"shop": {"stable_version": "v1"}},
            "rules": [
                {
                    "name": "p99",
                    "metric": "driftline_latency_seconds",
                    "match": {"quantile": "0.99", "deployment": "canary"},
                    "comparison": ">",
                    "threshold": 0.2,
                    "for": "2s",
                    "min_samples": 10,
                    "action": "rollback",
                }
            ],
            "alerting": {"rollback": {"dry_run": False, "cooldown_seconds": 5}},
        }
    )
    lines: list[str] = []
    replay = AlertReplay(config, lines.append)
    for second, p99 in enumerate([0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]):
        replay.step(_snapshot(0, [("v2", "canary", p99, 100)]), 1_000_000 + second * 1000)
    assert [line for line in lines if '"rollback"' in line and '"kind": "rollback"' in line] == [
        '{"kind": "rollback", "model": "shop", "from_version": "v2", "to_version": "v1", '
        '"rule": "p99", "at": 1002000, "dry_run": true}'
    ]
    states = [line.split('"state": ')[1].split(",")[0] for line in lines if '"alert"' in line]
    # Fired at 2 s and at 6 s: the second incident is within the 5 s cooldown (6 - 2 < 5).
    assert states == ['"pending"', '"firing"', '"resolved"', '"pending"', '"firing"']
    assert replay.summary() == {
        "declined_cooldown": 1,
        "dry_run": 1,
        "firing": 2,
        "pending": 2,
        "resolved": 1,
    }


@pytest.mark.parametrize(
    "module",
    [alerting.rule_conditions, alerting.rule_export, alerting.notifiers, driftline.alerting_config],
)
def test_doctests(module: Any) -> None:
    failures, tried = doctest.testmod(module, raise_on_error=False)
    assert tried > 0 and failures == 0


def test_nan_values_are_nodata() -> None:
    engine = RuleEngine([_rule()], ALERTING)
    [event] = engine.evaluate(_snapshot(0, [("v2", "canary", math.nan, 100)]))
    assert event.state == "nodata" and event.reason == "short window: no value"
