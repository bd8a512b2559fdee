"""The Redis window store: the live backend every consumer and evaluator shares.

One :class:`WindowUpdate` is one ``EVALSHA`` of ``apply_window_update.lua`` (the argument layout is
written at the top of that file), so increments and offset checkpoints are one atomic step.
Reading a window is one pipelined ``HGETALL`` per bucket, a single round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster

from detectors.window_store import (
    SHADOW_INDEX_LIMIT,
    AlarmEpisode,
    Applied,
    ApplyResult,
    Conflict,
    KeySchema,
    StateLost,
    WindowStore,
    bucket_runs,
)
from detectors.window_update import WindowLayout, WindowUpdate

__all__ = ["CLUSTER_SCHEME", "RedisWindowStore", "connect_redis"]

CLUSTER_SCHEME = "redis+cluster://"


def _script(name: str) -> str:
    return resources.files("detectors.stores").joinpath(name).read_text(encoding="utf-8")


def connect_redis(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ssl: bool = False,
    ssl_ca_certs: str | None = None,
) -> redis.Redis:
    """A client with the connection settings of ``RedisConfig`` (ACL user, TLS) passed through.

    ``redis+cluster://host:port`` connects to a Redis Cluster through one of its nodes; every key
    a script touches carries its model's hash tag, so each script runs on one slot.
    """
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    if ssl:
        options["ssl"] = True
        if ssl_ca_certs is not None:
            options["ssl_ca_certs"] = ssl_ca_certs
    if url.startswith(CLUSTER_SCHEME):
        cluster_url = "redis://" + url.removeprefix(CLUSTER_SCHEME)
        cluster: redis.Redis = RedisCluster.from_url(cluster_url, **options)  # type: ignore[assignment]
        return cluster
    client: redis.Redis = redis.Redis.from_url(url, **options)
    return client


class RedisWindowStore(WindowStore):
    """Windows in Redis hashes keyed ``{prefix}:{model}:bucket:{width_ms}:{start_ms}``."""

    def __init__(
        self, client: redis.Redis, layout: WindowLayout, keys: KeySchema | None = None
    ) -> None:
        self.client = client
        self.layout = layout
        self.keys = keys or KeySchema()
        self._apply = client.register_script(_script("apply_window_update.lua"))
        self._admit = client.register_script(_script("admit.lua"))

    def apply(self, update: WindowUpdate) -> ApplyResult:
        return self.apply_many([update])[0]

    def apply_many(self, updates: Sequence[WindowUpdate]) -> list[ApplyResult]:
        """One pipelined round trip; each script is still atomic on its own.

        An update's join records are queued before its script: Redis runs a connection's commands
        in order, so a script that ran (and moved the checkpoint) had its records written first.
        """
        if isinstance(self.client, RedisCluster):
            replies = self._apply_on_cluster(updates)
        else:
            pipeline = self.client.pipeline(transaction=False)
            script_positions = []
            for update in updates:
                self._queue_join_records(pipeline, update)
                keys, arguments = self._script_arguments(update)
                self._apply(keys=keys, args=arguments, client=pipeline)
                script_positions.append(len(pipeline) - 1)
            executed = pipeline.execute()
            replies = [executed[position] for position in script_positions]
        results: list[ApplyResult] = []
        for update, reply in zip(updates, replies, strict=True):
            status = int(reply[0])
            if status == 1:
                results.append(Applied())
                continue
            count = len(update.ranges)
            pairs = zip(update.ranges, reply[1 : count + 1], strict=True)
            checkpoints = {span.partition: int(value) for span, value in pairs}
            if status == 3:
                marked = frozenset(update.markers[int(m) - 1][0] for m in reply[count + 1 :])
                results.append(Conflict(checkpoints, labelled=marked))
            else:
                results.append(Conflict(checkpoints) if status == 0 else StateLost(checkpoints))
        return results

    def _queue_join_records(self, pipeline: Any, update: WindowUpdate) -> None:
        for event_id, record, expire_at_ms in update.join_records:
            pipeline.set(self.keys.prediction(event_id), record, pxat=expire_at_ms)
        if update.shadow_records:
            index = self.keys.shadow_events(update.model)
            for event_id, record, expire_at_ms, _ in update.shadow_records:
                pipeline.set(self.keys.shadow_prediction(event_id), record, pxat=expire_at_ms)
            pipeline.zadd(index, {event_id: ts for event_id, _, _, ts in update.shadow_records})
            newest_ms = max(ts for _, _, _, ts in update.shadow_records)
            oldest_kept_ms = newest_ms - self.layout.long_ms - self.layout.rollup_ms
            pipeline.zremrangebyscore(index, "-inf", f"({oldest_kept_ms}")
            pipeline.zremrangebyrank(index, 0, -SHADOW_INDEX_LIMIT - 1)
            pipeline.pexpireat(index, newest_ms + self.layout.long_ms + self.layout.rollup_ms)

    def _apply_on_cluster(self, updates: Sequence[WindowUpdate]) -> list[Any]:
        """Redis Cluster: redis-py refuses scripts in a cluster pipeline, so the join records go
        in one pipeline first and each script is then its own round trip to its model's node."""
        records = self.client.pipeline(transaction=False)
        for update in updates:
            self._queue_join_records(records, update)
        records.execute()
        return [
            self._apply(keys=keys, args=arguments)
            for keys, arguments in map(self._script_arguments, updates)
        ]

    def _script_arguments(self, update: WindowUpdate) -> tuple[list[str], list[str | int]]:
        layout = self.layout
        keys = [
            self.keys.checkpoints(update.model, update.checkpoint_space),
            self.keys.totals(update.model),
            self.keys.meta(update.model),
            self.keys.sequential_states(update.model),
            self.keys.sequential_alarms(update.model),
        ]
        arguments: list[str | int] = [len(update.ranges)]
        for span in update.ranges:
            arguments += [
                span.partition,
                span.first_offset,
                span.last_offset,
                span.known_applied_offset,
            ]
        arguments.append(len(update.sequential_writes))
        for write in update.sequential_writes:
            arguments += [write.partition, write.expected_offset, write.offset, write.state]
        arguments += [len(update.sequential_alarms), update.sequential_hold_ms]
        for alarm in update.sequential_alarms:
            arguments += [
                alarm.field,
                alarm.first_ms,
                alarm.last_ms,
                alarm.count,
                repr(alarm.statistic),
                repr(alarm.threshold),
                repr(alarm.shift_sd),
            ]
        arguments.append(update.newest_event_ms)
        bucket_retention = layout.retention_ms(layout.bucket_ms)
        rollup_retention = layout.retention_ms(layout.rollup_ms)
        for start_ms, fields in update.buckets.items():
            rollup_start_ms = start_ms - start_ms % layout.rollup_ms
            keys.append(self.keys.bucket(update.model, layout.bucket_ms, start_ms))
            keys.append(self.keys.bucket(update.model, layout.rollup_ms, rollup_start_ms))
            arguments += [
                start_ms + bucket_retention,
                rollup_start_ms + rollup_retention,
                len(fields),
            ]
            for name, increment in fields.items():
                arguments += [name, increment]
        arguments.append(len(update.totals))
        for name, increment in update.totals.items():
            arguments += [name, increment]
        for event_id, expire_at_ms in update.markers:
            keys.append(self.keys.labelled(update.model, event_id))
            arguments.append(expire_at_ms)
        arguments.append(len(update.markers))
        return keys, arguments

    def checkpoints(self, model: str, partitions: Iterable[int], space: str = "") -> dict[int, int]:
        wanted = list(partitions)
        if not wanted:
            return {}
        key = self.keys.checkpoints(model, space)
        values = self.client.hmget(key, [str(p) for p in wanted])
        return {p: -1 if v is None else int(v) for p, v in zip(wanted, values, strict=True)}

    def sequential_states(self, model: str, partitions: Iterable[int]) -> dict[int, str | None]:
        wanted = list(partitions)
        if not wanted:
            return {}
        found = self.client.hmget(
            self.keys.sequential_states(model), [f"state:{p}" for p in wanted]
        )
        return {p: None if v is None else str(v) for p, v in zip(wanted, found, strict=True)}

    def sequential_alarms(self, model: str) -> dict[str, AlarmEpisode]:
        parts: dict[str, dict[str, str]] = {}
        for name, value in self.client.hgetall(self.keys.sequential_alarms(model)).items():
            part, _, field = str(name).partition("|")
            parts.setdefault(field, {})[part] = str(value)
        return {
            field: AlarmEpisode(
                start_ms=int(found["start"]),
                last_ms=int(found["last"]),
                count=int(found["count"]),
                statistic=float(found["statistic"]),
                threshold=float(found["threshold"]),
                # Episodes stored before these were recorded have neither.
                shift_sd=float(found["shift"]) if "shift" in found else None,
                episodes=int(found.get("episodes", 1)),
            )
            for field, found in parts.items()
        }

    def prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        return self._get_untagged([self.keys.prediction(event_id) for event_id in event_ids])

    def shadow_prediction_records(self, event_ids: Sequence[str]) -> list[str | bytes | None]:
        return self._get_untagged([self.keys.shadow_prediction(event_id) for event_id in event_ids])

    def _get_untagged(self, keys: list[str]) -> list[str | bytes | None]:
        """Values of keys without a shared hash tag (one per event id), in order.

        On Redis Cluster they sit on many slots, where one ``MGET`` is refused; the records are
        independent, so one ``MGET`` per slot, all in one pipeline, loses nothing.
        """
        if not keys:
            return []
        found: list[str | bytes | None]
        if isinstance(self.client, RedisCluster):
            found = self.client.mget_nonatomic(keys)
        else:
            found = self.client.mget(keys)
        return found

    def shadow_event_ids(self, model: str, from_ms: int, to_ms: int, limit: int) -> list[str]:
        found = self.client.zrevrangebyscore(
            self.keys.shadow_events(model), f"({to_ms}", from_ms, start=0, num=limit
        )
        return [str(event_id) for event_id in found]

    def labelled(self, model: str, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []
        # One slot (the model's hash tag), so one MGET even on Redis Cluster.
        found = self.client.mget([self.keys.labelled(model, event_id) for event_id in event_ids])
        return [value is not None for value in found]

    def quality_reference(self, model: str) -> str | None:
        value = self.client.get(self.keys.quality_reference(model))
        return None if value is None else str(value)

    def save_quality_reference(self, model: str, document: str) -> None:
        self.client.set(self.keys.quality_reference(model), document)

    def admit(self, model: str, dimension: str, values: Sequence[str], cap: int) -> list[bool]:
        return self._admit_into(self.keys.admitted(model, dimension), values, cap)

    def admit_models(self, values: Sequence[str], cap: int) -> list[bool]:
        return self._admit_into(self.keys.models(), values, cap)

    def _admit_into(self, key: str, values: Sequence[str], cap: int) -> list[bool]:
        if not values:
            return []
        reply = self._admit(keys=[key], args=[cap, *values])
        return [bool(int(flag)) for flag in reply]

    def models(self) -> list[str]:
        return sorted(str(model) for model in self.client.smembers(self.keys.models()))

    def read_windows(
        self, model: str, windows_ms: Sequence[int], now_ms: int
    ) -> list[dict[str, int]]:
        runs = bucket_runs(self.layout, windows_ms, now_ms)
        pipeline = self.client.pipeline(transaction=False)
        for run in runs:
            for start in run.starts:
                pipeline.hgetall(self.keys.bucket(model, run.width_ms, start))
        replies: list[dict[str, str]] = pipeline.execute()
        windows: list[dict[str, int]] = [{} for _ in windows_ms]
        first = 0
        for run in runs:
            summed: dict[str, int] = {}
            done = 0
            for index, (count, position) in enumerate(run.windows, start=1):
                for reply in replies[first + done : first + count]:
                    for name, value in reply.items():
                        summed[name] = summed.get(name, 0) + int(value)
                done = count
                # The longest window takes the running sum itself; shorter ones a copy.
                windows[position] = summed if index == len(run.windows) else dict(summed)
            first += len(run.starts)
        return windows

    def read_bucket_fields(
        self, model: str, window_ms: int, now_ms: int, fields: Sequence[str]
    ) -> list[tuple[int, list[int]]]:
        width = self.layout.width_for(window_ms)
        starts = self.layout.bucket_starts(window_ms, now_ms)
        if not fields:
            return [(start, []) for start in starts]
        pipeline = self.client.pipeline(transaction=False)
        for start in starts:
            pipeline.hmget(self.keys.bucket(model, width, start), list(fields))
        replies: list[list[str | None]] = pipeline.execute()
        return [
            (start, [0 if value is None else int(value) for value in reply])
            for start, reply in zip(starts, replies, strict=True)
        ]

    def totals(self, model: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.client.hgetall(self.keys.totals(model)).items()}

    def newest_event_ms(self, model: str) -> int | None:
        value = self.client.hget(self.keys.meta(model), "newest_event_ms")
        return None if value is None else int(value)

    def consumer_positions(self, group: str, topic: str) -> dict[int, int]:
        stored = self.client.hgetall(self.keys.consumer_positions(group, topic))
        return {int(p): int(offset) for p, offset in stored.items()}

    def save_consumer_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        if positions:
            self.client.hset(
                self.keys.consumer_positions(group, topic),
                mapping={str(p): offset for p, offset in positions.items()},
            )

    def close(self) -> None:
        self.client.close()
