"""Bad events go to the dead-letter topic with their reason, are counted, and stop nothing."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import msgspec
import redis

from consumers.window_writer import BAD_EVENTS_FIELD, INVALID_EVENTS_MODEL
from detectors.series import Metric
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config
from driftline.config import Config
from tests.conftest import event_consumer, produce, read_topic

NOW_MS = int(time.time() * 1000)


def _event(index: int, **fields: object) -> bytes:
    event: dict[str, object] = {
        "event_id": f"ok-{index}",
        "ts": NOW_MS,
        "model": "fraud",
        "version": "v1",
        "latency_ms": 10.0 + index,
        "confidence": 0.9,
    }
    event.update(fields)
    return msgspec.json.encode(event)


BAD: list[tuple[bytes, str]] = [
    (b'{"event_id": "x", "ts": ', "bad_json"),
    (b'{"event_id": "\xff\xfe", "ts": 1, "model": "m", "version": "v"}', "not_utf8"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"event_id": "x", "ts": 1, "model": "fraud"}', "missing_field"),
    (_event(0, latency_ms="slow"), "wrong_type"),
    (_event(0)[:-1] + b',"confidence":1e999}', "non_finite"),
    (_event(0, confidence=3), "out_of_range"),
    (_event(0, deployment="purple"), "invalid_value"),
    (_event(0, features={"blob": "x" * (1024 * 1024)}), "oversized"),
    (os.urandom(4096), "bad_json"),
    (_event(0, ts=NOW_MS + 3_600_000), "future_timestamp"),
]


def test_bad_events_are_dead_lettered_counted_and_survived(
    runtime: str,
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
) -> None:
    config = stack_config(partitions=2)
    values: list[bytes] = []
    valid = 0
    for index, (raw, _) in enumerate(BAD * 3):
        values += [_event(1000 + index), raw]
        valid += 1
    values.append(_event(9999))
    valid += 1
    produce(kafka_bootstrap, config.topics.events, values)

    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    consumer = event_consumer(runtime, config, store)
    consumer.run(max_idle_s=3)

    assert consumer.events_applied == valid
    assert store.totals("fraud") == {f"v1|stable||{Metric.EVENTS}": valid}
    expected = Counter(reason for _, reason in BAD * 3)
    counted = {
        name.removeprefix(BAD_EVENTS_FIELD): count
        for name, count in store.totals(INVALID_EVENTS_MODEL).items()
    }
    assert counted == dict(expected)

    dead = read_topic(kafka_bootstrap, config.topics.dead_letter, len(BAD) * 3)
    assert len(dead) == len(BAD) * 3
    reasons = Counter(dict(m.headers())["driftline.reason"].decode() for m in dead)
    assert reasons == expected
    originals = {raw for raw, _ in BAD}
    for message in dead:
        headers = dict(message.headers())
        if headers["driftline.reason"] == b"oversized":
            original = int(headers["driftline.truncated_from"])
            assert original > 1024 * 1024 and len(message.value()) == 256 * 1024
        else:
            assert message.value() in originals, "dead letters carry the original bytes"
        assert headers["driftline.source.topic"].decode() == config.topics.events
        assert int(headers["driftline.source.offset"]) >= 0

    # A second consumer of the same group replays nothing and dead-letters nothing twice.
    again = event_consumer(runtime, config, store)
    again.run(max_idle_s=2)
    assert again.events_applied == 0
    assert (
        len(read_topic(kafka_bootstrap, config.topics.dead_letter, len(BAD) * 3 + 1, timeout_s=3))
        == len(BAD) * 3
    )


def test_a_key_near_the_size_limit_is_cut_too(
    stack_config: Callable[..., Config], kafka_bootstrap: str, redis_client: redis.Redis
) -> None:
    """A key of 800 kB beside a bad value over the cut: together still over the producer's
    limit, so the consumer stopped at that message on every restart."""
    config = stack_config(partitions=1)
    big_key = b"k" * 800_000
    produce(
        kafka_bootstrap,
        config.topics.events,
        [_event(1), b"{" + b"x" * 240_000, _event(2)],
        keys=[None, big_key, None],
    )
    store = RedisWindowStore(
        redis_client, layout_from_config(config), KeySchema(config.redis.key_prefix)
    )
    consumer = event_consumer("confluent", config, store)
    consumer.run(max_idle_s=3)
    assert consumer.events_applied == 2
    [dead] = read_topic(kafka_bootstrap, config.topics.dead_letter, 1)
    headers = dict(dead.headers())
    assert headers["driftline.reason"] == b"oversized"
    assert int(headers["driftline.key_truncated_from"]) == len(big_key)
    assert dead.key() == big_key[: 16 * 1024] and dead.value() == b"{" + b"x" * 240_000
