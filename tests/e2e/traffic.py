"""Live synthetic traffic for end-to-end alerting tests: events stamped with the wall clock."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Stream:
    """One version's traffic; change ``latency_median_ms`` or ``rate_per_s`` while it runs."""

    version: str
    deployment: str
    rate_per_s: float
    latency_median_ms: float = 20.0
    segment: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveTraffic:
    """Publishes every stream's events every 100 ms, stamped now, until stopped."""

    bootstrap: str
    topic: str
    model: str
    streams: list[Stream]
    seed: int = 7
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LiveTraffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        rng = np.random.default_rng(self.seed)
        owed = dict.fromkeys(range(len(self.streams)), 0.0)
        while not self._stop.wait(0.1):
            now_ms = time.time_ns() // 1_000_000
            for index, stream in enumerate(self.streams):
                owed[index] += stream.rate_per_s * 0.1
                count = int(owed[index])
                owed[index] -= count
                latencies = rng.lognormal(np.log(stream.latency_median_ms), 0.3, count)
                for latency in latencies.tolist():
                    self.sent += 1
                    event = {
                        "event_id": f"e{self.sent}",
                        "ts": now_ms,
                        "model": self.model,
                        "version": stream.version,
                        "deployment": stream.deployment,
                        "latency_ms": round(latency, 3),
                        "confidence": 0.9,
                        "prediction": "yes",
                        "segment": stream.segment,
                    }
                    producer.produce(
                        self.topic, json.dumps(event).encode(), key=self.model.encode()
                    )
            producer.poll(0)
        producer.flush(10)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(condition: object, timeout_s: float, what: str, every_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
