"""Backtest memory: peak RSS of ``driftline backtest`` against the size of the file; prints JSON.

Writes ``--events`` seeded events (20 numeric features, ~610 bytes each, 1,000 events/s of event
time) three times: once in event-time order; once as a dump of ``--partitions`` partitions
interleaved a thousand lines at a time, the way a multi-partition topic dump comes out (out of
order by up to a second or two); and once as a gzip file per partition. Builds a reference from
the first 100,000 events, then runs ``driftline backtest``, each run in its own process:

- ``in_memory``: the ordered file with a sort memory large enough to hold it (the whole file is
  read into memory and sorted there, as every file was before files could be streamed);
- ``ordered_streamed``: the ordered file with ``--sort-memory-mb`` = ``--run-mb``: streamed;
- ``partition_dump_sorted_on_disk``: the dump with the same memory: sorted in runs on disk;
- ``partition_files_gzip_merged``: the partitions as separate gzip files (each in order), with
  the same memory: decompressed and merged as they are replayed.

Each reports ``peak_rss_mb`` (``os.wait4``), ``seconds``, ``lines_per_second`` and the SHA-256
of its output; all three outputs must be equal (``same_output``). ``speed_ratio_to_in_memory``
compares each run's lines per second with the in-memory run of the same invocation.
``baseline_build_of_the_whole_file`` is the peak RSS and time of ``driftline baseline build`` on
the ordered file: ``exact`` keeps every number, ``sampled`` keeps ``--baseline-sample-size`` per
feature and reads the file twice.

    python bench/backtest_memory.py [--events 1000000] [--partitions 4] [--run-mb 64]
        [--baseline-sample-size 100000]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

from driftline.synthetic import TrafficSpec, synthetic_events

START_MS = 1_700_000_000_000
RATE_PER_S = 1_000.0


def _write_files(folder: Path, count: int, partitions: int) -> tuple[Path, Path, Path, list[Path]]:
    """Written line by line: this process must stay small, because a child started from it
    reports at least this process's peak RSS (Linux keeps it across exec)."""
    spec = TrafficSpec("fraud", "v1")
    ordered_path = folder / "ordered.jsonl"
    dump_path = folder / "partition-dump.jsonl"
    sample_path = folder / "sample.jsonl"
    partition_paths = [folder / f"partition-{number}.jsonl" for number in range(partitions)]
    events = synthetic_events(
        spec, count, start_ms=START_MS, rate_per_s=RATE_PER_S, seed=11, decimals=12
    )
    with ExitStack() as files:
        ordered = files.enter_context(ordered_path.open("wb"))
        sample = files.enter_context(sample_path.open("wb"))
        by_partition = [files.enter_context(path.open("wb")) for path in partition_paths]
        for index, (raw, _) in enumerate(events):
            ordered.write(raw + b"\n")
            if index < 100_000:
                sample.write(raw + b"\n")
            # Partition p holds every partitions-th event.
            by_partition[index % partitions].write(raw + b"\n")
    compressed_paths = [path.with_name(path.name + ".gz") for path in partition_paths]
    with ExitStack() as files:
        dump = files.enter_context(dump_path.open("wb"))
        readers = [files.enter_context(path.open("rb")) for path in partition_paths]
        compressed = [files.enter_context(gzip.open(path, "wb")) for path in compressed_paths]
        # The dump takes 1,000 lines of each partition in turn.
        while any(chunks := [list(islice(reader, 1_000)) for reader in readers]):
            for chunk, partition_file in zip(chunks, compressed, strict=True):
                dump.writelines(chunk)
                partition_file.writelines(chunk)
    for path in partition_paths:
        path.unlink()
    return ordered_path, dump_path, sample_path, compressed_paths


def _run(command: list[str], output_path: Path) -> dict[str, Any]:
    started = time.monotonic()
    with output_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--run-mb", type=int, default=64)
    parser.add_argument("--baseline-sample-size", type=int, default=100_000)
    arguments = parser.parse_args()
    driftline = [sys.executable, "-m", "driftline.cli"]
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        ordered_path, dump_path, sample_path, partition_paths = _write_files(
            folder, arguments.events, arguments.partitions
        )
        reference_path = folder / "reference.json"
        build = ["baseline", "build", "--model", "fraud", "--output", str(reference_path)]
        subprocess.run(
            [*driftline, *build, str(sample_path)],
            check=True,
            capture_output=True,
        )
        in_memory_mb = 4 * math.ceil(ordered_path.stat().st_size / 2**20) + 1
        results: dict[str, Any] = {}
        for name, paths, sort_memory_mb in (
            ("in_memory", [ordered_path], in_memory_mb),
            ("ordered_streamed", [ordered_path], arguments.run_mb),
            ("partition_dump_sorted_on_disk", [dump_path], arguments.run_mb),
            ("partition_files_gzip_merged", partition_paths, arguments.run_mb),
        ):
            output_path = folder / f"{name}.out"
            options = ["--no-progress", "--reference", str(reference_path)]
            options += ["--sort-memory-mb", str(sort_memory_mb)]
            run = _run([*driftline, "backtest", *options, *map(str, paths)], output_path)
            results[name] = {
                "files": len(paths),
                "file_mb": round(sum(path.stat().st_size for path in paths) / 2**20, 1),
                "sort_memory_mb": sort_memory_mb,
                "peak_rss_mb": round(run["peak_rss_bytes"] / 2**20, 1),
                "seconds": round(run["seconds"], 1),
                "lines_per_second": round(arguments.events / run["seconds"]),
                "output_sha256": hashlib.sha256(output_path.read_bytes()).hexdigest(),
            }
        for result in results.values():
            result["speed_ratio_to_in_memory"] = round(
                result["lines_per_second"] / results["in_memory"]["lines_per_second"], 3
            )
        baseline_build = {}
        for name, sample_size in (
            ("exact", arguments.events),
            ("sampled", arguments.baseline_sample_size),
        ):
            full_reference_path = folder / f"{name}-reference.json"
            build = ["baseline", "build", "--model", "fraud", "--output", str(full_reference_path)]
            build += ["--sample-size", str(sample_size)]
            run = _run([*driftline, *build, str(ordered_path)], folder / "build.out")
            baseline_build[name] = {
                "sample_size": sample_size,
                "peak_rss_mb": round(run["peak_rss_bytes"] / 2**20, 1),
                "seconds": round(run["seconds"], 1),
            }
    print(
        json.dumps(
            {
                "events": arguments.events,
                "partitions": arguments.partitions,
                # A floor under every peak_rss_mb below (inherited across exec), not part of it.
                "bench_process_peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
                **results,
                "same_output": len({result["output_sha256"] for result in results.values()}) == 1,
                "baseline_build_of_the_whole_file": baseline_build,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
