"""Config errors name the key and the bad value; defaults are complete."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from driftline.config import Config, ConfigError, load_config, parse_config

RULE = {"name": "r", "metric": "driftline_error_ratio", "comparison": ">=", "threshold": 0}


def test_defaults_are_complete() -> None:
    config = parse_config({})
    assert config == Config()
    assert config.windows.short_seconds == 300 and config.windows.long_seconds == 3600


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"windows": {"bucket_seconds": 0}}, "windows.bucket_seconds", "0"),
        ({"windows": {"short_seconds": 305}}, "windows", "305"),
        (
            {"models": {"fraud": {"features": {"amount": "numerc"}}}},
            "models.fraud.features.amount",
            "'numerc'",
        ),
        ({"kafka": {"bootstrap_server": "x:1"}}, "kafka.bootstrap_server", "unknown key"),
        ({"consumer": {"batch_size": "many"}}, "consumer.batch_size", "'many'"),
        ({"redis": {"key_prefix": "has space"}}, "redis.key_prefix", "'has space'"),
        # Accepted once, these failed later: at start-up, on the first write or in a rule.
        (
            {"drift": {"sequential": {"false_alarms_per_day": math.inf}}},
            "drift.sequential.false_alarms_per_day",
            "inf",
        ),
        (
            {"drift": {"sequential": {"events_per_second": 1e100}}},
            "drift.sequential.events_per_second",
            "1e+100",
        ),
        ({"windows": {"long_seconds": 10**16}}, "windows.long_seconds", "10000000000000000"),
        (
            {"models": {"m": {"labels": {"horizon_seconds": 10**16}}}},
            "models.m.labels.horizon_seconds",
            "10000000000000000",
        ),
        ({"rules": [{**RULE, "for": math.nan}]}, "rules.r.for", "nan"),
        ({"rules": [{**RULE, "keep_firing_for": 1e306}]}, "rules.r.keep_firing_for", "1e+306"),
    ],
)
def test_errors_name_key_and_value(data: dict[str, object], key: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    message = str(raised.value)
    assert key in message
    assert value in message


def test_yaml_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("windows: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
