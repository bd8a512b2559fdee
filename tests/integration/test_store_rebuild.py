"""Lost Redis state is rebuilt from Kafka, by either runtime, with every event counted once.

Between two runs, or under a running consumer: that one stops (it must not add increments on top
of the hole), and its restart rebuilds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from consumers.exceptions import StoreStateLost
from detectors.series import Metric
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from detectors.window_summary import summarise
from driftline.cli import layout_from_config
from driftline.config import Config
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import committed_offsets, end_offsets, event_consumer, produce


def test_wiped_store_is_rebuilt_one_long_window_back(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
) -> None:
    config = stack_config(partitions=3, consumer={"batch_size": 500})
    now_ms = int(time.time() * 1000)
    values: list[bytes] = []
    keys: list[bytes] = []
    for seed, model in enumerate(("fraud", "churn")):
        stream = synthetic_events(
            TrafficSpec(model, "v1", feature_count=2),
            3000,
            start_ms=now_ms - 120_000,
            rate_per_s=30,
            seed=seed,
        )
        for raw, _ in stream:
            values.append(raw)
            keys.append(model.encode())
    produce(kafka_bootstrap, config.topics.events, values, keys)
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    event_consumer(runtime, config, store).run(max_idle_s=3)
    ends = end_offsets(kafka_bootstrap, config.topics.events, 3)
    committed = committed_offsets(kafka_bootstrap, config.kafka.group_id, config.topics.events, 3)
    assert [max(offset, 0) for offset in committed] == ends

    # Redis restarted empty: windows, checkpoints and resume hints are all gone.
    wiped = list(redis_client.scan_iter(f"{config.redis.key_prefix}:*", count=1000))
    assert wiped
    redis_client.delete(*wiped)

    rebuilt = event_consumer(runtime, config, store)
    rebuilt.run(max_idle_s=3)
    assert rebuilt.events_applied == 6000, "every event of the last long window is replayed"
    for model in ("fraud", "churn"):
        assert store.totals(model) == {f"v1|stable||{Metric.EVENTS}": 3000}
        [long_window] = store.read_windows(model, [config.windows.long_seconds * 1000], now_ms)
        assert [window.events for window in summarise(long_window).values()] == [3000]

    # Once rebuilt, the state is whole again: a third consumer has nothing to add.
    again = event_consumer(runtime, config, store)
    again.run(max_idle_s=2)
    assert again.events_applied == 0


def test_store_wiped_under_a_running_consumer_stops_it_and_is_rebuilt(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
) -> None:
    config = stack_config(partitions=2, consumer={"batch_size": 400})
    now_ms = int(time.time() * 1000)
    streams = {
        model: [
            raw
            for raw, _ in synthetic_events(
                TrafficSpec(model, "v1", feature_count=2),
                2000,
                start_ms=now_ms - 120_000,
                rate_per_s=20,
                seed=seed,
            )
        ]
        for seed, model in enumerate(("fraud", "churn"))
    }

    def send(half: slice) -> None:
        values = [raw for model in streams for raw in streams[model][half]]
        keys = [model.encode() for model in streams for _ in streams[model][half]]
        produce(kafka_bootstrap, config.topics.events, values, keys)

    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    running = event_consumer(runtime, config, store)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            running.run()
        except BaseException as error:  # what the process would exit with
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    send(slice(0, 1000))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while running.events_applied < 2000:
            assert time.monotonic() < deadline and thread.is_alive(), failure
            time.sleep(0.05)
        # Redis restarts empty under the consumer, then more events arrive.
        redis_client.delete(*redis_client.scan_iter(f"{config.redis.key_prefix}:*", count=1000))
        send(slice(1000, 2000))
        thread.join(60)
        assert not thread.is_alive(), "the consumer went on adding to a store that lost its state"
    finally:
        running.stop()
        thread.join(60)
    assert [type(error) for error in failure] == [StoreStateLost]
    assert sum(sum(store.totals(model).values()) for model in streams) == 0, "nothing on the hole"

    restarted = event_consumer(runtime, config, store)
    restarted.run(max_idle_s=3)
    assert restarted.events_applied == 4000
    for model in streams:
        assert store.totals(model) == {f"v1|stable||{Metric.EVENTS}": 2000}
