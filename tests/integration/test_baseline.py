"""References in the real Redis: the store, the cache, and ``driftline baseline`` end to end."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import redis
from click.testing import CliRunner

from consumers.batching import BatchAssembler
from consumers.kafka_consumer import binning_from_config
from consumers.window_writer import WindowWriter
from detectors.reference import Reference
from detectors.reference_cache import ReferenceCache
from detectors.stores.redis_reference_store import RedisReferenceStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import layout_from_config, main
from driftline.config import Config
from driftline.line_files import zstd
from driftline.synthetic import TrafficSpec, synthetic_events
from tests.conftest import write_config


def test_baseline_commands_round_trip_through_redis(
    stack_config: Callable[..., Config], redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = stack_config(partitions=1)
    config_path = write_config(config, tmp_path)
    keys = KeySchema(config.redis.key_prefix)
    store = RedisReferenceStore(redis_client, keys)
    events = tmp_path / "events.jsonl"
    spec = TrafficSpec("fraud", "v41", feature_count=3)
    events.write_bytes(
        b"".join(
            raw + b"\n"
            for raw, _ in synthetic_events(spec, 5_000, start_ms=0, rate_per_s=100, seed=3)
        )
        + b"not json\n"
    )
    runner = CliRunner()

    def run(*arguments: str) -> str:
        result = runner.invoke(main, list(arguments))
        assert result.exit_code == 0, result.output
        return result.stdout

    built = tmp_path / "built.json"
    run(
        "baseline",
        "build",
        "--config",
        str(config_path),
        "--model",
        "fraud",
        "--version",
        "v41",
        "--output",
        str(built),
        "--store",
        str(events),
    )
    reference = Reference.from_json(built.read_bytes())
    assert reference.version == "v41" and reference.events == 5_000
    assert reference.feature_names == ("f0", "f1", "f2")
    # The same events in three files, plain, gzip and zstd, build the same reference.
    content = events.read_bytes()
    third = content.index(b"\n", len(content) // 3) + 1
    two_thirds = content.index(b"\n", 2 * len(content) // 3) + 1
    (tmp_path / "first.jsonl").write_bytes(content[:third])
    (tmp_path / "second.jsonl.gz").write_bytes(gzip.compress(content[third:two_thirds]))
    (tmp_path / "third.jsonl.zst").write_bytes(zstd.compress(content[two_thirds:]))
    names = ("first.jsonl", "second.jsonl.gz", "third.jsonl.zst")
    three_files = [str(tmp_path / name) for name in names]
    rebuilt = tmp_path / "rebuilt.json"
    run(
        "baseline",
        "build",
        "--model",
        "fraud",
        "--version",
        "v41",
        "--output",
        str(rebuilt),
        *three_files,
    )
    again = Reference.from_json(rebuilt.read_bytes())
    # Edges from a sample of 500 numbers a feature, then every event counted in a second pass:
    # the same reference whether the events come in one file or three.
    sampled = []
    for name, files in (("one", [str(events)]), ("three", three_files)):
        path = tmp_path / f"sampled-{name}.json"
        sample = ["--sample-size", "500", "--output", str(path)]
        run("baseline", "build", "--model", "fraud", "--version", "v41", *sample, *files)
        sampled.append(Reference.from_json(path.read_bytes()))
    assert sampled[0].features == sampled[1].features != reference.features
    assert sampled[0].events == 5_000
    assert [sum(feature.counts) for feature in sampled[0].features] == [5_000] * 3
    twice = runner.invoke(main, ["baseline", "build", "--model", "fraud", *three_files[:1] * 2])
    assert twice.exit_code == 2 and f"{three_files[0]} is given twice" in twice.output
    assert (again.features, again.prediction, again.confidence, again.events) == (
        reference.features,
        reference.prediction,
        reference.confidence,
        reference.events,
    )
    assert redis_client.hget(keys.reference("fraud"), "id") == reference.reference_id
    assert store.load("fraud") == reference
    assert run("baseline", "export", "--config", str(config_path), "--model", "fraud").strip() == (
        reference.to_json()
    )

    # The cache sees a re-import only after its refresh interval, then reloads it.
    seconds = [0.0]
    cache = ReferenceCache(store, refresh_seconds=30, clock_s=lambda: seconds[0])
    assert cache.binner_for("fraud") == reference

    # Freeze the live long window of v42: same bins, counts from Redis.
    window_store = RedisWindowStore(redis_client, layout_from_config(config), keys)
    now_ms = time.time_ns() // 1_000_000
    lines = [
        raw
        for raw, _ in synthetic_events(
            TrafficSpec("fraud", "v42", feature_count=3, feature_shift=1.0, shifted_features=1),
            2_000,
            start_ms=now_ms - 30_000,
            rate_per_s=100,
            seed=4,
        )
    ]
    assembler = BatchAssembler(config, window_store, cache.binner_for)
    writer = WindowWriter(window_store, binning_from_config(config), cache.binner_for)
    assembled = assembler.assemble([0] * len(lines), list(range(len(lines))), lines, now_ms)
    writer.write_all(list(assembled.models.values()), now_ms)
    frozen_path = tmp_path / "frozen.json"
    run(
        "baseline",
        "freeze",
        "--config",
        str(config_path),
        "--model",
        "fraud",
        "--version",
        "v42",
        "--output",
        str(frozen_path),
    )
    frozen = Reference.from_json(frozen_path.read_bytes())
    assert store.reference_id("fraud") == frozen.reference_id != reference.reference_id
    assert (frozen.version, frozen.events) == ("v42", 2_000)
    for old, new in zip(reference.features, frozen.features, strict=True):
        assert new.edges == old.edges and sum(new.counts) == 2_000
    assert sum(frozen.features[0].counts[-5:]) > 1_000, "f0 moved up by one sigma"
    seconds[0] = 30.0
    assert cache.reference("fraud") == frozen

    # Import the first one back; delete; errors are clear.
    run("baseline", "import", "--config", str(config_path), str(built))
    assert store.reference_id("fraud") == reference.reference_id
    run("baseline", "delete", "--config", str(config_path), "--model", "fraud")
    assert store.load("fraud") is None
    result = runner.invoke(
        main, ["baseline", "export", "--config", str(config_path), "--model", "fraud"]
    )
    assert result.exit_code == 1 and "model 'fraud' has no reference" in result.output
    result = runner.invoke(
        main,
        [
            "baseline",
            "freeze",
            "--config",
            str(config_path),
            "--model",
            "fraud",
            "--version",
            "v42",
        ],
    )
    assert result.exit_code == 1 and "has no reference to take bins from" in result.output
    damaged = tmp_path / "damaged.json"
    document = json.loads(built.read_text())
    document["events"] = 1
    damaged.write_text(json.dumps(document))
    result = runner.invoke(main, ["baseline", "import", "--config", str(config_path), str(damaged)])
    assert result.exit_code == 1 and "does not match the content" in result.output
    assert store.load("fraud") is None, "a refused import changes nothing"
