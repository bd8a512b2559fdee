"""Config errors name the key and the bad value; defaults are complete."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from alerting.drill import post_json
from driftline.cli import main
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
        # An empty group aborted the process inside librdkafka, with no message at all.
        ({"kafka": {"group_id": ""}}, "kafka.group_id", "''"),
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
    # These raised (not UTF-8, nested past the recursion limit) or hung writing out the value.
    path.write_bytes(b"windows: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_text("a: " + "[" * 1000 + "]" * 1000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)
    ]
    path.write_text("bomb:\n" + "\n".join("  " + line for line in levels) + "\n")
    with pytest.raises(ConfigError, match=r"bomb = \{'a0': \[.*\.\.\..*unknown key") as raised:
        load_config(path)
    assert len(str(raised.value)) < 2_000


def test_a_key_given_twice_is_an_error_naming_it_and_its_line(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a second ``rules:`` silently dropped the first's."""
    path = tmp_path / "twice.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: errors, metric: driftline_error_ratio, comparison: '>', threshold: 0.05}\n"
        "windows: {short_seconds: 300}\n"
        "rules: []\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"found the key 'rules' twice") as raised:
        load_config(path)
    assert f'in "{path}", line 4' in str(raised.value)
    path.write_text("models:\n  m:\n    features: {a: numeric, a: categorical}\n")
    with pytest.raises(ConfigError, match=r"found the key 'a' twice"):
        load_config(path)
    # A merge's keys may be overridden: that is what a merge is for.
    path.write_text("base: &base {short_seconds: 300}\nwindows: {<<: *base, short_seconds: 600}\n")
    with pytest.raises(ConfigError, match=r"^\S+: 1 invalid setting\(s\)\n  base = "):
        load_config(path)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:99999/0", "redis://h:abc/0", "http://x", "redis://[::1/0"]
)
def test_a_malformed_redis_url_is_an_error_naming_it(tmp_path: Path, url: str) -> None:
    """redis-py's URL parse raised ValueError, which came out as a traceback."""
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": url}}), encoding="utf-8")
    result = CliRunner().invoke(main, ["baseline", "delete", "--config", str(path), "--model", "m"])
    assert result.exit_code == 1 and f"redis.url = {url!r}: " in result.output, result.output


@pytest.mark.parametrize("command", [["evaluate"], ["webhook", "--dev"], ["gate", "--dev"]])
def test_ports_out_of_range_are_usage_errors(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--port", "70000"])
    assert result.exit_code == 2 and "70000 is not in the range 0<=x<=65535" in result.output


@pytest.mark.parametrize(("value", "message"), [("nan", "nan is not a number"), ("1e400", "inf")])
def test_drill_timeouts_must_be_finite(value: str, message: str) -> None:
    result = CliRunner().invoke(main, ["drill", "--timeout", value])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("url", ["not a url", "http://[::1"])
def test_a_malformed_drill_url_is_a_connection_error(url: str) -> None:
    """urllib raised ValueError out of the drill; it reports it as it does an unreachable URL."""
    with pytest.raises(ConnectionError, match=f"POST {re.escape(url)}: "):
        post_json(url, {}, {}, timeout_s=1.0)
