"""The Redis and in-memory window stores give identical windows for the same events.

Also: replays are refused by both, and latency quantiles read back from the Redis windows are
within 1 % of numpy's exact quantiles of the same values.
"""

from __future__ import annotations

import time
import uuid

import msgspec
import numpy as np
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.window_writer import WindowWriter
from detectors.sequential_detector import SequentialAlarm
from detectors.series import Series
from detectors.stores.memory_store import MemoryWindowStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import AlarmEpisode, Applied, Conflict, KeySchema, WindowStore
from detectors.window_summary import summarise
from detectors.window_update import PartitionRange, SequentialWrite, WindowUpdate
from driftline.cli import layout_from_config
from driftline.config import Config, parse_config

CONFIG = parse_config(
    {
        "windows": {
            "bucket_seconds": 10,
            "rollup_seconds": 60,
            "short_seconds": 60,
            "long_seconds": 600,
        },
        "models": {"fraud": {"segments": ["region"]}},
        "monitoring": {"max_versions_per_model": 3, "max_segment_values": 2},
    }
)

event_strategy = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["fraud", "churn"]),
        "version": st.sampled_from(["v1", "v2", "v3", "v4"]),
        "deployment": st.sampled_from(["stable", "canary", "shadow"]),
        "age_ms": st.integers(min_value=0, max_value=900_000),
        "latency_ms": st.none() | st.floats(min_value=0, max_value=10_000),
        "confidence": st.none() | st.floats(min_value=0, max_value=1),
        "error": st.booleans() | st.sampled_from(["", "timeout"]),
        "region": st.none() | st.sampled_from(["eu", "us", "apac", "a|b%c"]),
        "partition": st.integers(min_value=0, max_value=2),
    }
)


def _stores(client: redis.Redis, config: Config) -> tuple[RedisWindowStore, MemoryWindowStore]:
    layout = layout_from_config(config)
    prefix = f"prop{uuid.uuid4().hex[:8]}"
    return RedisWindowStore(client, layout, KeySchema(prefix)), MemoryWindowStore(layout)


def _write(
    store: WindowStore,
    config: Config,
    rows: list[dict[str, object]],
    now_ms: int,
    offsets: list[int],
) -> int:
    assembler = BatchAssembler(config, store)
    writer = WindowWriter(store, binning_from_config(config))
    values = []
    for index, row in enumerate(rows):
        event = {
            "event_id": f"e{index}",
            "ts": now_ms - int(row["age_ms"]),  # type: ignore[call-overload]
            "model": row["model"],
            "version": row["version"],
            "deployment": row["deployment"],
            "latency_ms": row["latency_ms"],
            "confidence": row["confidence"],
            "error": row["error"],
        }
        if row["region"] is not None:
            event["segment"] = {"region": row["region"]}
        values.append(msgspec.json.encode(event))
    partitions = [int(row["partition"]) for row in rows]  # type: ignore[call-overload]
    batch = assembler.assemble(partitions, offsets, values, now_ms)
    return sum(writer.write(model_batch, now_ms) for model_batch in batch.models.values())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(event_strategy, min_size=1, max_size=120), st.integers(min_value=1, max_value=4))
def test_redis_and_memory_windows_are_identical(
    redis_client: redis.Redis, rows: list[dict[str, object]], batches: int
) -> None:
    redis_store, memory_store = _stores(redis_client, CONFIG)
    now_ms = int(time.time() * 1000)
    offsets = list(range(len(rows)))
    size = -(-len(rows) // batches)
    for start in range(0, len(rows), size):
        chunk, chunk_offsets = rows[start : start + size], offsets[start : start + size]
        applied = [
            _write(store, CONFIG, chunk, now_ms, chunk_offsets)
            for store in (redis_store, memory_store)
        ]
        assert applied[0] == applied[1]
    # A full replay is recognised by both stores and changes nothing.
    assert _write(redis_store, CONFIG, rows, now_ms, offsets) == 0
    assert _write(memory_store, CONFIG, rows, now_ms, offsets) == 0

    # The drift fast window last: windows of one width share their buckets, in any order.
    assert CONFIG.drift.fast_window_seconds == 30
    windows_ms = [
        CONFIG.windows.short_seconds * 1000,
        CONFIG.windows.long_seconds * 1000,
        CONFIG.drift.fast_window_seconds * 1000,
    ]
    for model in ("fraud", "churn"):
        together = redis_store.read_windows(model, windows_ms, now_ms)
        assert together == memory_store.read_windows(model, windows_ms, now_ms)
        # Reading each bucket once gives what reading every window on its own gives.
        assert together == [
            redis_store.read_windows(model, [window_ms], now_ms)[0] for window_ms in windows_ms
        ]
        assert redis_store.totals(model) == memory_store.totals(model)
        assert redis_store.newest_event_ms(model) == memory_store.newest_event_ms(model)
    assert redis_store.models() == memory_store.models()


def test_latency_quantiles_from_redis_windows_within_one_percent(redis_client: redis.Redis) -> None:
    redis_store, _ = _stores(redis_client, CONFIG)
    rng = np.random.default_rng(11)
    latencies = rng.lognormal(np.log(40), 0.8, 20_000)
    now_ms = int(time.time() * 1000)
    rows = [
        {
            "model": "fraud",
            "version": "v1",
            "deployment": "stable",
            "age_ms": int(i % 50_000),
            "latency_ms": float(value),
            "confidence": 0.9,
            "error": False,
            "region": None,
            "partition": 0,
        }
        for i, value in enumerate(latencies)
    ]
    for start in range(0, len(rows), 5000):
        _write(
            redis_store,
            CONFIG,
            rows[start : start + 5000],
            now_ms,
            list(range(start, start + min(5000, len(rows) - start))),
        )
    [window] = redis_store.read_windows("fraud", [CONFIG.windows.short_seconds * 1000], now_ms)
    series = summarise(window)[Series("v1", "stable")]
    assert series.events == len(latencies)
    mapping = binning_from_config(CONFIG).latency
    for q in (0.5, 0.95, 0.99):
        exact = np.quantile(latencies, q)
        assert abs(series.latency_quantile(mapping, q) - exact) <= 0.01 * exact, q


def test_caps_count_overflow_instead_of_growing(redis_client: redis.Redis) -> None:
    redis_store, _ = _stores(redis_client, CONFIG)
    now_ms = int(time.time() * 1000)
    rows = [
        {
            "model": "fraud",
            "version": f"v{i % 6}",
            "deployment": "stable",
            "age_ms": 0,
            "latency_ms": 1.0,
            "confidence": 0.5,
            "error": False,
            "region": f"r{i % 5}",
            "partition": 0,
        }
        for i in range(60)
    ]
    _write(redis_store, CONFIG, rows, now_ms, list(range(60)))
    [window] = redis_store.read_windows("fraud", [60_000], now_ms)
    by_series = summarise(window)
    versions = {s.version for s in by_series}
    segments = {s.segment for s in by_series if s.segment}
    assert len(versions) == 3 + 1 and "__overflow__" in versions
    assert len(segments) == 2 + 1 and "region=__overflow__" in segments
    assert sum(w.events for s, w in by_series.items() if not s.segment) == 60


def _sequential_update(
    expected_offset: int, offset: int, alarms: list[SequentialAlarm]
) -> WindowUpdate:
    return WindowUpdate(
        model="fraud",
        ranges=[PartitionRange(0, offset, offset)],
        buckets={},
        totals={},
        newest_event_ms=0,
        sequential_writes=[SequentialWrite(0, expected_offset, offset, f"state at {offset}")],
        sequential_alarms=alarms,
        sequential_hold_ms=60_000,
    )


def test_sequential_states_move_only_from_the_state_they_were_built_on(
    redis_client: redis.Redis,
) -> None:
    """Both stores: a state built on a stale one is refused whole (no checkpoint, no alarm), and
    alarms within the hold of the previous one extend its episode (adding their shifts), later
    ones start another."""
    field = "v1|stable||amount"

    def alarm(
        first_ms: int, last_ms: int, count: int, statistic: float, shift_sd: float = 0.5
    ) -> SequentialAlarm:
        return SequentialAlarm(field, first_ms, last_ms, count, statistic, 20.1, shift_sd)

    for store in _stores(redis_client, CONFIG):
        assert store.sequential_states("fraud", [0, 1]) == {0: None, 1: None}
        assert isinstance(
            store.apply(_sequential_update(-1, 10, [alarm(1_000, 2_000, 3, 21.5)])), Applied
        )
        # Built on "nothing stored" again, as a zombie that missed the first write would.
        refused = store.apply(_sequential_update(-1, 20, [alarm(5_000, 5_000, 1, 30.0)]))
        assert isinstance(refused, Conflict) and refused.checkpoints == {0: 10}
        assert store.sequential_states("fraud", [0]) == {0: "state at 10"}
        assert store.checkpoints("fraud", [0]) == {0: 10}
        assert store.sequential_alarms("fraud") == {
            field: AlarmEpisode(1_000, 2_000, 3, 21.5, 20.1, 0.5, 1)
        }
        # Within the hold (60 s) of the last alarm: the same episode.
        assert isinstance(
            store.apply(_sequential_update(10, 20, [alarm(50_000, 61_000, 2, 25.0, -0.75)])),
            Applied,
        )
        assert store.sequential_alarms("fraud") == {
            field: AlarmEpisode(1_000, 61_000, 5, 21.5, 20.1, -0.25, 1)
        }
        # More than the hold after it: a new episode, dated at its own first alarm.
        assert isinstance(
            store.apply(_sequential_update(20, 30, [alarm(122_000, 122_000, 1, 20.5, 1.0)])),
            Applied,
        )
        assert store.sequential_alarms("fraud") == {
            field: AlarmEpisode(122_000, 122_000, 6, 20.5, 20.1, 1.0, 2)
        }
        assert store.sequential_states("fraud", [0]) == {0: "state at 30"}


def test_an_episode_stored_before_shifts_and_episodes_were_recorded_still_reads(
    redis_client: redis.Redis,
) -> None:
    """An episode hash written without ``shift`` and ``episodes`` reads as one episode of
    unknown shift; it keeps no shift until it ends, and the next episode is the second."""
    field = "v1|stable||amount"
    store, _ = _stores(redis_client, CONFIG)
    key = store.keys.sequential_alarms("fraud")
    redis_client.hset(
        key,
        mapping={
            f"start|{field}": 1_000,
            f"last|{field}": 2_000,
            f"count|{field}": 3,
            f"statistic|{field}": 21.5,
            f"threshold|{field}": 20.1,
        },
    )
    assert store.sequential_alarms("fraud") == {
        field: AlarmEpisode(1_000, 2_000, 3, 21.5, 20.1, None, 1)
    }
    within = SequentialAlarm(field, 30_000, 30_000, 1, 22.0, 20.1, -0.25)
    assert isinstance(store.apply(_sequential_update(-1, 10, [within])), Applied)
    assert store.sequential_alarms("fraud") == {
        field: AlarmEpisode(1_000, 30_000, 4, 21.5, 20.1, None, 1)
    }
    after = SequentialAlarm(field, 100_000, 100_500, 2, 23.0, 20.1, 0.5)
    assert isinstance(store.apply(_sequential_update(10, 20, [after])), Applied)
    assert store.sequential_alarms("fraud") == {
        field: AlarmEpisode(100_000, 100_500, 6, 23.0, 20.1, 0.5, 2)
    }
