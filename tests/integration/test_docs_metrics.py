"""Every metric name in the README and docs is catalogued and served on /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from alerting.metric_names import CATALOGUE
from driftline.config import Config
from tests.conftest import REPO, write_config
from tests.e2e.traffic import free_port

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _mentioned() -> dict[str, set[str]]:
    """Metric name -> the documents naming it."""
    found: dict[str, set[str]] = {}
    for path in DOCUMENTS:
        for name in re.findall(r"\bdriftline_[a-z0-9_]*[a-z0-9]\b", path.read_text("utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _served(config_path: Path, port: int) -> set[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "evaluate",
            "--config",
            str(config_path),
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "driftline evaluate never served /metrics"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)
    return set(re.findall(r"^# HELP (\S+) ", text, flags=re.MULTILINE))


def test_metric_names_in_the_docs_exist(
    stack_config: Callable[..., Config], tmp_path: Path
) -> None:
    mentioned = _mentioned()
    assert len(mentioned) > 30  # the docs do name the metrics (the test reads the right files)
    catalogue = {metric.name for metric in CATALOGUE}
    uncatalogued = {
        name: sorted(where) for name, where in mentioned.items() if name not in catalogue
    }
    assert uncatalogued == {}, f"not in alerting/metric_names.py: {uncatalogued}"
    served = _served(write_config(stack_config(partitions=1), tmp_path), free_port())
    unserved = {name: sorted(where) for name, where in mentioned.items() if name not in served}
    assert unserved == {}, f"not on /metrics: {unserved}"
