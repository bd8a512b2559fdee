"""Bad configs and bad input stop the CLI before it touches anything, naming the key and value."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

REPO = Path(__file__).resolve().parents[2]


def _driftline(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("verb", ["consume", "evaluate"])
def test_bad_config_names_key_and_starts_nothing(
    verb: str, tmp_path: Path, redis_client: redis.Redis, unique: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"redis: {{key_prefix: bad{unique}}}\n"
        "windows: {bucket_seconds: -3}\nconsumer: {batch_sise: 10}\n",
        encoding="utf-8",
    )
    result = _driftline(verb, "--config", str(path))
    assert result.returncode != 0
    assert "windows.bucket_seconds = -3" in result.stderr
    assert "consumer.batch_sise = 10: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(redis_client.scan_iter(f"bad{unique}:*")) == []


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "unreachable.yaml"
    path.write_text("redis: {url: 'redis://127.0.0.1:1/0'}\n", encoding="utf-8")
    result = _driftline("evaluate", "--config", str(path), "--once")
    assert result.returncode != 0
    assert "redis.url = 'redis://127.0.0.1:1/0': cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_verb_has_help() -> None:
    top = _driftline("--help")
    assert top.returncode == 0
    verbs = [
        line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert {"consume", "evaluate", "demo"} <= set(verbs)
    for verb in verbs:
        assert _driftline(verb, "--help").returncode == 0, verb


@pytest.mark.parametrize(
    ("arguments", "kafka", "message"),
    [
        (
            ["consume"],
            "{client: {no.such.property: 1}}",
            'kafka.client.no.such.property = 1: No such configuration property: "no.such.property"',
        ),
        (
            ["consume-labels"],
            "{consumer: {session.timeout.ms: abc}}",
            "kafka.consumer.session.timeout.ms = 'abc': Invalid value",
        ),
        (["evaluate"], "{producer: {acks: 1}}", "kafka.producer.acks = 1: "),
        (["status"], "{consumer: {group.id: ''}}", "kafka.consumer.group.id = '': "),
        (["webhook", "--dev"], "{client: {error_cb: 1}}", "kafka.client.error_cb = 1: "),
        (
            ["demo"],
            "{client: {security.protocol: SASL_PLAINTEXT, sasl.mechanisms: PLAIN}}",
            "kafka.client with kafka.consumer: Failed to create consumer: sasl.username",
        ),
    ],
)
def test_a_refused_librdkafka_setting_is_named_before_anything_starts(
    arguments: list[str], kafka: str, message: str, tmp_path: Path
) -> None:
    """librdkafka refused them with a KafkaException traceback wherever a client was built; now
    before Redis (unreachable here) is even opened."""
    path = tmp_path / "kafka.yaml"
    path.write_text(f"kafka: {kafka}\nredis: {{url: 'redis://127.0.0.1:1/0'}}\n", encoding="utf-8")
    result = _driftline(*arguments, "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "redis.url" not in result.stderr


def test_valid_librdkafka_settings_pass_the_check(tmp_path: Path) -> None:
    """Settings valid only together (SASL with its mechanism and credentials) are not refused one
    by one: the command gets as far as Redis."""
    path = tmp_path / "kafka.yaml"
    path.write_text(
        "kafka:\n"
        "  client: {security.protocol: SASL_PLAINTEXT, sasl.mechanisms: PLAIN,"
        " sasl.username: u, sasl.password: p}\n"
        "  consumer: {session.timeout.ms: 30000}\n"
        "  producer: {linger.ms: 10}\n"
        "redis: {url: 'redis://127.0.0.1:1/0'}\n",
        encoding="utf-8",
    )
    result = _driftline("consume", "--config", str(path))
    assert result.returncode == 1
    assert "redis.url = 'redis://127.0.0.1:1/0': cannot connect" in result.stderr
    assert "kafka." not in result.stderr


def test_commands_without_kafka_clients_skip_the_check(tmp_path: Path) -> None:
    """A production config names certificates that exist only where its consumers run; exporting
    its rules in CI must still work."""
    path = tmp_path / "production.yaml"
    path.write_text(
        "kafka: {client: {security.protocol: SSL, ssl.ca.location: /nowhere/ca.pem}}\n"
        "rules:\n"
        "  - {name: errors, metric: driftline_error_ratio, comparison: '>', threshold: 0.05}\n",
        encoding="utf-8",
    )
    exported = _driftline("rules", "export", "--config", str(path), "--out-dir", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    consume = _driftline("consume", "--config", str(path))
    assert consume.returncode == 1 and "ssl.ca.location" in consume.stderr, consume.stderr
    assert "Traceback" not in consume.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _stack_config(tmp_path: Path, redis_url: str, kafka_bootstrap: str, unique: str) -> Path:
    path = tmp_path / "driftline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "redis": {"url": redis_url, "key_prefix": f"bind{unique}"},
                "evaluator": {"metrics_host": "127.0.0.1"},
            }
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("verb", [["evaluate"], ["webhook", "--dev"], ["gate", "--dev"]])
def test_a_port_in_use_is_an_error_naming_the_address(
    verb: list[str],
    busy_port: int,
    tmp_path: Path,
    redis_url: str,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    config = _stack_config(tmp_path, redis_url, kafka_bootstrap, unique)
    host = [] if verb == ["evaluate"] else ["--host", "127.0.0.1"]
    result = _driftline(*verb, "--config", str(config), *host, "--port", str(busy_port))
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{busy_port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("verb", [["evaluate"], ["webhook", "--dev"], ["gate", "--dev"]])
def test_a_host_that_does_not_resolve_is_an_error_naming_it(
    verb: list[str], tmp_path: Path, redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    config = _stack_config(tmp_path, redis_url, kafka_bootstrap, unique)
    if verb == ["evaluate"]:
        settings = yaml.safe_load(config.read_text(encoding="utf-8"))
        settings["evaluator"]["metrics_host"] = "no-such-host.invalid"
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        host = []
    else:
        host = ["--host", "no-such-host.invalid"]
    result = _driftline(*verb, "--config", str(config), *host, "--port", "0")
    assert result.returncode == 1, result.stderr
    assert "cannot listen on no-such-host.invalid:0: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "verb",
    [["drill", "--via", "webhook", "--webhook-url", "http://127.0.0.1:1"], ["webhook"], ["gate"]],
    ids=["drill", "webhook", "gate"],
)
@pytest.mark.parametrize("token", [b"\xff\xfe-not-text", "café".encode(), b"two words"])
def test_a_token_that_cannot_travel_in_a_header_is_named(
    verb: list[str], token: bytes, tmp_path: Path, redis_url: str, unique: str
) -> None:
    """Bytes that are not UTF-8 made drill raise; other non-ASCII ones made a receiver whose token
    no request could match (http.server reads headers as Latin-1)."""
    token_path = tmp_path / "token"
    token_path.write_bytes(token)
    config = tmp_path / "driftline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": redis_url, "key_prefix": f"token{unique}"},
                "alerting": {"webhook": {"token_file": str(token_path)}},
                "rules": [
                    {
                        "name": "canary-errors",
                        "metric": "driftline_error_ratio",
                        "comparison": ">",
                        "threshold": 0.02,
                        "action": "rollback",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    result = _driftline(*verb, "--config", str(config))
    assert result.returncode == 1, result.stderr
    expected = f"alerting.webhook.token_file = {str(token_path)!r}: a bearer token must be visible"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("verb", ["consume", "consume-labels"])
@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        ("nan", "nan is not a number"),
        ("inf", "inf is not a finite number"),
        ("1e400", "inf is not a finite number"),
        ("-1", "-1.0 is not in the range x>=0"),
    ],
)
def test_exit_when_idle_must_be_a_finite_number_of_seconds(
    verb: str, seconds: str, message: str, tmp_path: Path
) -> None:
    """nan and inf never compare as reached, so the consumer ran forever (here Redis is
    unreachable, so the old code stopped there instead)."""
    path = tmp_path / "unreachable.yaml"
    path.write_text("redis: {url: 'redis://127.0.0.1:1/0'}\n", encoding="utf-8")
    result = _driftline(verb, "--config", str(path), "--exit-when-idle", seconds)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '--exit-when-idle': {message}" in result.stderr
