"""Bad configs and bad input stop the CLI before it touches anything, naming the key and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

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
