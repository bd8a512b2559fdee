"""`make demo`, the README's first command, headless and in bounded time: its summary shows the
canary's rollback, and the audit stream it points to holds the executed decision.

Holds the stack ports' lock: the demo serves /metrics on $DRIFTLINE_METRICS_PORT (scraped by the
local Prometheus) and the webhook receiver on $DRIFTLINE_WEBHOOK_PORT.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import redis

from tests.conftest import REPO
from tests.e2e.stack_ports import exclusive_stack_ports

DEMO_LIMIT_S = 180  # the "under 3 minutes", stack start and install checks included


def test_make_demo_rolls_the_canary_back_within_three_minutes(
    redis_client: redis.Redis,
) -> None:
    with exclusive_stack_ports():
        started = time.monotonic()
        done = subprocess.run(
            ["make", "demo"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEMO_LIMIT_S + 60,
            check=False,
            env={**os.environ, "TERM": "dumb"},
        )
        took_s = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert took_s < DEMO_LIMIT_S, f"make demo took {took_s:.0f}s"
    # The summary: what was rolled back, by which rule, and that both actions ran.
    assert re.search(
        r"ROLLBACK executed: fraud v42 -> v41 by rule canary-p99-latency-vs-stable"
        r" \(value [0-9.]+, threshold 1\.5\); actions: redis_key: ok, "
        r"kafka_control: ok",
        output,
    ), output[-4000:]
    # Alerts moved through pending before firing, and the traffic obeyed the rollback.
    pending = output.index("alert canary-p99-latency-vs-stable on fraud v42: pending")
    firing = output.index("alert canary-p99-latency-vs-stable on fraud v42: firing")
    assert pending < firing
    assert "traffic obeys: fraud serves v41 only" in output
    # Where to look, and what is there.
    audit_key = re.search(r"audit stream XRANGE (\S+) - \+", output)
    active_key = re.search(r"rollback key GET (\S+);", output)
    assert audit_key is not None and active_key is not None, output[-2000:]
    decisions = [fields for _, fields in redis_client.xrange(audit_key.group(1))]
    executed = [d for d in decisions if d["decision"] == "executed"]
    assert [(d["model"], d["from_version"], d["to_version"]) for d in executed] == [
        ("fraud", "v42", "v41")
    ]
    assert redis_client.get(active_key.group(1)) == "v41"
    for where in ("metrics ", "Prometheus ", "Alertmanager ", "status ", "logs "):
        assert where in output
    print(f"make demo took {took_s:.1f}s")
