"""Live synthetic traffic with ground truth, for the demo (and the tests that replay its scenario).

Every ``tick_s`` each :class:`LiveStream` publishes its share of events, stamped with the wall
clock, through :class:`~driftline.publisher.Publisher`; ``label_delay_s`` later, the ground truth
of each event goes to the labels topic. Streams are changed while they run (``spec``,
``label_accuracy``, ``active``): that is how the demo injects drift, a latency rise and a precision
drop into a canary.

Services obey rollbacks: with ``active_version`` set, the traffic asks it once a second which
version each model should serve (the demo reads the Redis key the ``redis_key`` rollback action
sets); once a model is rolled back, its other versions stop and their traffic goes to the version
named.

Lifecycle: :meth:`LiveTraffic.start` starts one background thread; :meth:`LiveTraffic.stop` stops
it, flushes both publishers and returns once everything queued was delivered or timed out.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from driftline.config import Config
from driftline.publisher import Publisher
from driftline.synthetic import TrafficSpec, synthetic_events

__all__ = ["LiveStream", "LiveTraffic"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


@dataclass
class LiveStream:
    """One model version's traffic; every field may change while the traffic runs.

    ``label_accuracy`` is the probability that an event's ground truth equals its prediction:
    the precision of the ``positive`` class is about that value.
    """

    spec: TrafficSpec
    rate_per_s: float
    label_accuracy: float = 0.95
    active: bool = True

    def change(self, **fields: object) -> None:
        """Replace fields of the traffic spec (latency, feature shift, error rate, ...)."""
        self.spec = dataclasses.replace(self.spec, **fields)  # type: ignore[arg-type]


class LiveTraffic:
    def __init__(
        self,
        config: Config,
        streams: Sequence[LiveStream],
        *,
        run_id: str,
        label_delay_s: float = 2.0,
        tick_s: float = 0.1,
        seed: int = 7,
        active_version: Callable[[str], str | None] | None = None,
    ) -> None:
        settings = {**config.kafka.client, **config.kafka.producer}
        self.events = Publisher(
            config.kafka.bootstrap_servers, config.topics.events, settings=settings
        )
        self.labels = Publisher(
            config.kafka.bootstrap_servers, config.topics.labels, settings=settings
        )
        self.streams = list(streams)
        self.run_id = run_id
        self.label_delay_s = label_delay_s
        self.tick_s = tick_s
        self.active_version = active_version
        self.rolled_back: dict[str, str] = {}
        """Model -> the version it was rolled back to, as soon as the traffic obeyed."""
        self.events_sent = 0
        self.labels_sent = 0
        self._rng = np.random.default_rng(seed)
        self._owed = [0.0] * len(self.streams)
        self._pending: collections.deque[tuple[float, bytes, bytes]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticks = 0

    def start(self) -> LiveTraffic:
        self._thread = threading.Thread(target=self._run, name="live-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.events.flush(10)
        self.labels.flush(10)

    def _run(self) -> None:
        last_check = 0.0
        last_tick = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            if self.active_version is not None and now - last_check >= 1.0:
                last_check = now
                self._follow_rollbacks()
            # Owe what the time actually elapsed asks for: a slow tick must not slow the rate.
            elapsed_s, last_tick = now - last_tick, now
            try:
                self._tick(time.time_ns() // 1_000_000, elapsed_s)
            except Exception:  # a demo must keep going through a broker hiccup
                log.exception("live traffic tick failed")

    def _follow_rollbacks(self) -> None:
        assert self.active_version is not None
        for model in {stream.spec.model for stream in self.streams} - set(self.rolled_back):
            try:
                version = self.active_version(model)
            except Exception as error:
                log.warning("cannot read the active version of %s: %s", model, error)
                continue
            if version is None:
                continue
            target = next(
                (s for s in self.streams if s.spec.model == model and s.spec.version == version),
                None,
            )
            if target is None:
                continue
            for stream in self.streams:
                if stream.spec.model == model and stream is not target and stream.active:
                    target.rate_per_s += stream.rate_per_s
                    stream.active = False
            self.rolled_back[model] = version

    def _tick(self, now_ms: int, elapsed_s: float) -> None:
        self._ticks += 1
        for index, stream in enumerate(self.streams):
            if not stream.active:
                continue
            self._owed[index] += stream.rate_per_s * elapsed_s
            count = int(self._owed[index])
            self._owed[index] -= count
            if count == 0:
                continue
            events = synthetic_events(
                stream.spec,
                count,
                start_ms=now_ms,
                rate_per_s=1e9,  # every event of this tick carries the tick's time
                seed=int(self._rng.integers(2**31)),
                id_prefix=f"{self.run_id}-{self._ticks}-",
            )
            right = self._rng.random(count) < stream.label_accuracy
            due = time.monotonic() + self.label_delay_s
            for (raw, event), correct in zip(events, right.tolist(), strict=True):
                self.events.publish_raw(raw, key=stream.spec.model.encode())
                self.events_sent += 1
                prediction = str(event["prediction"])
                truth = prediction if correct else _other(prediction)
                self._pending.append((due, str(event["event_id"]).encode(), truth.encode()))
        self._send_due_labels()

    def _send_due_labels(self) -> None:
        now = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        while self._pending and self._pending[0][0] <= now:
            _, event_id, truth = self._pending.popleft()
            label = {"event_id": event_id.decode(), "label": truth.decode(), "ts": now_ms}
            self.labels.publish_raw(_encoder.encode(label), key=event_id)
            self.labels_sent += 1


def _other(prediction: str) -> str:
    return "negative" if prediction == "positive" else "positive"
