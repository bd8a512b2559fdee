"""Backtest speed: CPU time per event of ``driftline backtest`` against a JSON-decoding floor.

Writes ``--events`` seeded events (20 numeric features, ~610 bytes each, 1,000 events/s of event
time, in order) and a reference built from the first 100,000, then measures on that file:

- ``floor_us_per_event``: this process reading the file's lines and parsing each with
  ``msgspec.json.decode`` (no schema, nothing kept): a yardstick no replay can beat, and one that
  does not move when driftline's own code does;
- ``backtest_us_per_event``: CPU time (user + system, ``os.wait4``) of ``driftline backtest`` from
  this checkout, in its own process, less that of the same command on the file's first event
  (start-up: imports, reading the reference), divided by the events; the least of ``--repeats``
  runs;
- ``ratio_to_floor``: backtest / floor, the figure to compare between runs on a shared machine.

``--compression gzip`` (or ``zstd``) measures the same events as a compressed file (as an
object-store sink exports them); the floor still reads the plain file, so the ratio includes
decompressing it (twice: once to check its order, once to replay it).

``--compare-with TREE`` also runs the backtest from another checkout of driftline (for example
``git worktree add /tmp/before main~3``), interleaved with this one's runs, and reports both and
``speedup`` (before / now). Both must print the same transitions and summary (``same_output``).

    python bench/backtest_speed.py [--events 300000] [--repeats 3] [--compression gzip|zstd]
        [--compare-with TREE]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from driftline.line_files import zstd
from driftline.synthetic import TrafficSpec, synthetic_events

START_MS = 1_700_000_000_000
RATE_PER_S = 1_000.0
REFERENCE_EVENTS = 100_000
THIS_CHECKOUT = Path(__file__).resolve().parent.parent
# Each at its command-line tool's default level (``gzip -6``, ``zstd -3``).
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, 6),
    "zstd": lambda data: zstd.compress(data, 3),
}


def _write_files(folder: Path, count: int) -> tuple[Path, Path, Path]:
    events_path = folder / "events.jsonl"
    first_path = folder / "first-event.jsonl"
    sample_path = folder / "sample.jsonl"
    events = synthetic_events(
        TrafficSpec("fraud", "v1"),
        count,
        start_ms=START_MS,
        rate_per_s=RATE_PER_S,
        seed=11,
        decimals=12,
    )
    with events_path.open("wb") as file:
        file.writelines(raw + b"\n" for raw, _ in events)
    with events_path.open("rb") as file:
        lines = list(islice(file, REFERENCE_EVENTS))
    first_path.write_bytes(lines[0])
    sample_path.write_bytes(b"".join(lines))
    return events_path, first_path, sample_path


def _floor_seconds(path: Path) -> float:
    started = time.process_time()
    with path.open("rb") as file:
        for line in file:
            msgspec.json.decode(line)
    return time.process_time() - started


def _cpu_seconds(tree: Path, arguments: list[str], output_path: Path) -> float:
    """CPU seconds of ``driftline`` imported from the checkout at ``tree``."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *filter(None, [environment.get("PYTHONPATH")])]
    )
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *arguments],
            stdout=output,
            stderr=subprocess.PIPE,
            env=environment,
            # Not this folder: ``python -m`` puts the working folder first on the import path.
            cwd=output_path.parent,
        )
        _, status, usage = os.wait4(process.pid, 0)
    assert process.stderr is not None
    if os.waitstatus_to_exitcode(status) != 0:
        errors = process.stderr.read().decode()
        raise SystemExit(f"driftline {' '.join(arguments)} failed:\n{errors}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compression", choices=sorted(COMPRESSORS), help="replay a compressed file"
    )
    parser.add_argument("--compare-with", type=Path, metavar="TREE")
    arguments = parser.parse_args()
    trees = {"now": THIS_CHECKOUT}
    if arguments.compare_with is not None:
        trees["before"] = arguments.compare_with.resolve()
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        events_path, first_path, sample_path = _write_files(folder, arguments.events)
        file_mb = round(events_path.stat().st_size / 2**20, 1)
        replayed_path, compressed_mb = events_path, None
        if arguments.compression is not None:
            replayed_path = folder / f"events.jsonl.{arguments.compression}"
            compress = COMPRESSORS[arguments.compression]
            replayed_path.write_bytes(compress(events_path.read_bytes()))
            compressed_mb = round(replayed_path.stat().st_size / 2**20, 1)
        reference_path = folder / "reference.json"
        build = ["baseline", "build", "--model", "fraud", "--output", str(reference_path)]
        _cpu_seconds(THIS_CHECKOUT, [*build, str(sample_path)], folder / "build.out")
        backtest = ["backtest", "--no-progress", "--reference", str(reference_path)]
        floor_seconds = min(_floor_seconds(events_path) for _ in range(arguments.repeats))
        per_event = dict.fromkeys(trees, float("inf"))
        digests: dict[str, str] = {}
        for _ in range(arguments.repeats):
            for name, tree in trees.items():
                output_path = folder / f"{name}.out"
                start_up = _cpu_seconds(tree, [*backtest, str(first_path)], output_path)
                whole = _cpu_seconds(tree, [*backtest, str(replayed_path)], output_path)
                per_event[name] = min(per_event[name], (whole - start_up) / arguments.events)
                digests[name] = hashlib.sha256(output_path.read_bytes()).hexdigest()
    floor = floor_seconds / arguments.events
    result: dict[str, Any] = {
        "events": arguments.events,
        "file_mb": file_mb,
        "compression": arguments.compression,
        "compressed_mb": compressed_mb,
        "floor_us_per_event": round(floor * 1e6, 2),
        "backtest_us_per_event": round(per_event["now"] * 1e6, 2),
        "ratio_to_floor": round(per_event["now"] / floor, 2),
    }
    if "before" in trees:
        result["before"] = {
            "tree": str(trees["before"]),
            "backtest_us_per_event": round(per_event["before"] * 1e6, 2),
            "ratio_to_floor": round(per_event["before"] / floor, 2),
        }
        result["speedup"] = round(per_event["before"] / per_event["now"], 2)
        result["same_output"] = digests["before"] == digests["now"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
