"""Exported rules: promtool accepts and passes them, the tests can fail, and the engine agrees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from alerting import metric_names as names
from alerting.notifiers import alert_labels
from alerting.rule_engine import RuleEngine
from alerting.snapshot import Snapshot
from driftline.cli import main
from driftline.config import Config, load_config
from tests.conftest import REPO

EXAMPLE = REPO / "deploy" / "alerting" / "alerting.example.yaml"
SHIPPED = REPO / "deploy" / "prometheus"
EXTRA_RULES = """
  - name: confidence-drop-vs-stable
    metric: driftline_confidence_mean_ratio
    match: {deployment: canary}
    relative: {reference: {deployment: stable}, mode: drop, min_samples: 50}
    comparison: ">"
    threshold: 0.05
    for: 90s
    windows: long
    min_samples: 100
    labels: {team: ml}
    summary: "{model} {version} lost {value:.2f} confidence (rule {rule})"
  - name: canary-precision
    metric: driftline_precision_ratio
    match: {deployment: canary, class: fraud}
    comparison: "<"
    threshold: 0.9
    for: 2h
    windows: long
    min_samples: 200
    samples_metric: driftline_window_labels
    action: rollback
  - name: throughput-floor
    metric: driftline_throughput_events_per_second
    match: {deployment: stable}
    comparison: "<"
    threshold: 1
    min_samples: 0
"""


def _export(config_path: Path, out_dir: Path) -> tuple[Path, Path]:
    done = CliRunner().invoke(
        main, ["rules", "export", "--config", str(config_path), "--out-dir", str(out_dir)]
    )
    assert done.exit_code == 0, done.output
    written = json.loads(done.stdout.splitlines()[-1])
    return Path(written["rules"]), Path(written["tests"])


def _promtool(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is not installed"
    return subprocess.run(
        [promtool, *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "driftline.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    path.write_text(text.replace("\nalerting:", EXTRA_RULES + "\nalerting:", 1), encoding="utf-8")
    return path


def test_promtool_checks_and_tests_pass(config_path: Path, tmp_path: Path) -> None:
    rules, tests = _export(config_path, tmp_path / "out")
    checked = _promtool("check", "rules", rules.name, cwd=rules.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    tested = _promtool("test", "rules", tests.name, cwd=tests.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every rule with min_samples has a "below min_samples never fires" case.
    groups = yaml.safe_load(tests.read_text(encoding="utf-8"))["tests"]
    assert len(groups) == 9 + 8


def test_generated_tests_catch_a_missing_traffic_guard(config_path: Path, tmp_path: Path) -> None:
    rules, tests = _export(config_path, tmp_path / "out")
    data = yaml.safe_load(rules.read_text(encoding="utf-8"))
    for rule in data["groups"][0]["rules"]:
        rule["expr"] = re.sub(r" and on\([^)]*\) \(driftline_window_\w+[^)]*\)", "", rule["expr"])
    rules.write_text(yaml.safe_dump(data), encoding="utf-8")
    tested = _promtool("test", "rules", tests.name, cwd=tests.parent)
    assert tested.returncode == 1
    failed = re.findall(
        r"name: (.*?): below min_samples never fires", tested.stdout + tested.stderr
    )
    assert sorted(failed) == sorted(
        [
            "p99-latency",
            "error-ratio",
            "low-confidence-ratio",
            "drift-share",
            "canary-p99-latency-vs-stable",
            "canary-error-ratio-vs-stable",
            "confidence-drop-vs-stable",
            "canary-precision",
        ]
    )


def test_shipped_files_are_the_export_of_the_example(tmp_path: Path) -> None:
    rules, tests = _export(EXAMPLE, tmp_path)
    assert rules.read_text() == (SHIPPED / "driftline-rules.yml").read_text()
    assert tests.read_text() == (SHIPPED / "driftline-rules.test.yml").read_text()
    tested = _promtool("test", "rules", "driftline-rules.test.yml", cwd=SHIPPED)
    assert tested.returncode == 0, tested.stdout
    config = _promtool("check", "config", "prometheus.yml", cwd=SHIPPED)
    assert config.returncode == 0, config.stdout + config.stderr
    amtool = shutil.which("amtool")
    assert amtool is not None
    checked = subprocess.run(
        [amtool, "check-config", str(REPO / "deploy" / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)=("(?:[^"\\]|\\.)*")')


def _snapshot(series: list[dict[str, str]], at_ms: int) -> Snapshot:
    catalogue = {metric.name: metric for metric in names.CATALOGUE}
    snapshot = Snapshot(taken_at_ms=at_ms)
    for entry in series:
        found = _SERIES.match(entry["series"])
        assert found is not None
        labels = {name: json.loads(value) for name, value in _LABEL.findall(found.group(2) or "")}
        metric = catalogue[found.group(1)]
        value = float(entry["values"].split("+")[0])
        snapshot.add(metric, tuple(labels.get(name, "") for name in metric.labels), value)
    return snapshot


def _seconds(text: str) -> int:
    assert text.endswith("s")
    return int(text[:-1])


def test_engine_fires_where_prometheus_does(config_path: Path, tmp_path: Path) -> None:
    """The built-in engine, fed promtool's inputs at promtool's evaluations, gives the alerts
    promtool expects of Prometheus: same label sets, at the same times, never on thin traffic."""
    config: Config = load_config(config_path)
    _, tests = _export(config_path, tmp_path)
    document: dict[str, Any] = yaml.safe_load(tests.read_text(encoding="utf-8"))
    step = _seconds(document["evaluation_interval"])
    checked = 0
    for group in document["tests"]:
        engine = RuleEngine(config.rules, config.alerting)
        cases = {_seconds(case["eval_time"]): case for case in group["alert_rule_test"]}
        for second in range(0, max(cases) + 1, step):
            snapshot = _snapshot(group["input_series"], second * 1000)
            engine.evaluate(snapshot)
            if second not in cases:
                continue
            case = cases[second]
            firing = [
                {k: v for k, v in alert_labels(event).items() if k != "alertname"}
                for event in engine.firing(second * 1000)
                if event.rule.name == case["alertname"]
            ]
            assert firing == [alert["exp_labels"] for alert in case["exp_alerts"]], (
                group["name"],
                second,
            )
            checked += 1
    assert checked == 9 * 2 + 8 - 1  # "not yet" cases exist where `for` > 0 (not throughput)


def test_every_shipped_rule_links_a_runbook_page() -> None:
    config = load_config(EXAMPLE)
    for rule in config.rules:
        url = config.alerting.runbook_url(rule)
        assert url == f"docs/runbooks/{rule.name}.md"
        page = (REPO / url).read_text(encoding="utf-8")
        for heading in ("## What it means", "## How to confirm", "## What to do"):
            assert heading in page, (rule.name, heading)
        assert ("## How to undo a rollback" in page) == (rule.action == "rollback")


@pytest.mark.parametrize("name", ["", ".", "..", "../outside", "nested/name"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(
    config_path: Path, tmp_path: Path, name: str
) -> None:
    """ "../outside" wrote beside --out-dir, "" a hidden ".yml", "nested/name" a traceback."""
    done = CliRunner().invoke(
        main,
        [
            *("rules", "export", "--config", str(config_path)),
            *("--out-dir", str(tmp_path / "out"), "--name", name),
        ],
    )
    assert done.exit_code == 2, done.output
    assert f"Invalid value for '--name': {name!r} is not a plain file name" in done.output
    assert list(tmp_path.rglob("*.yml")) == []


@pytest.mark.parametrize("blocked", ["out dir under a file", "rule file is a directory"])
def test_an_export_that_cannot_be_written_is_an_error_naming_the_path(
    config_path: Path, tmp_path: Path, blocked: str
) -> None:
    if blocked == "out dir under a file":
        (tmp_path / "file").write_text("", encoding="utf-8")
        out_dir = unwritable = tmp_path / "file" / "out"
        reason = "Not a directory"
    else:
        out_dir = tmp_path / "out"
        unwritable = out_dir / "driftline-rules.yml"
        unwritable.mkdir(parents=True)
        reason = "Is a directory"
    done = CliRunner().invoke(
        main, ["rules", "export", "--config", str(config_path), "--out-dir", str(out_dir)]
    )
    assert isinstance(done.exception, SystemExit), done.exception  # no traceback
    assert done.exit_code == 1
    assert f"cannot write {unwritable}: {reason}" in done.output
