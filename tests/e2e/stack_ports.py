"""The local stack's fixed ports for driftline (metrics 18000, webhook 18080), one test at a time.

Prometheus always scrapes ``$DRIFTLINE_METRICS_PORT`` and Alertmanager always calls
``$DRIFTLINE_WEBHOOK_PORT``: a test that serves them holds this lock (shared by every process on
the machine) for as long as it does.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_PATH = "/tmp/driftline-stack-ports.lock"


def metrics_port() -> int:
    return int(os.environ.get("DRIFTLINE_METRICS_PORT", "18000"))


def webhook_port() -> int:
    return int(os.environ.get("DRIFTLINE_WEBHOOK_PORT", "18080"))


@contextmanager
def exclusive_stack_ports(timeout_s: float = 600.0) -> Iterator[None]:
    with open(LOCK_PATH, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK_PATH} held for over {timeout_s:g}s") from None
                time.sleep(0.5)
        try:
            for port in (metrics_port(), webhook_port()):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        raise RuntimeError(
                            f"port {port} is in use by a process not holding {LOCK_PATH}"
                        )
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
