"""TimeOrderedLines: JSON-lines files in the order of a stable sort by time, in bounded memory.

Every way of reading files (already in order, sorted in memory, sorted in runs on disk, several
merged, plain, gzip or zstd) must give exactly the order Python's stable ``sorted`` gives on all
their lines held in memory, one file after the other.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import random
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from driftline import line_files, time_ordered_lines
from driftline.backtest import event_time
from driftline.line_files import nonblank_lines, zstd
from driftline.time_ordered_lines import LineCursor, TimedLine, TimeOrderedLines


def _lines(count: int, seed: int) -> list[bytes]:
    """Events whose times repeat often (ties must keep file order), with some lines that have
    no readable time (they sort first) and blank lines (skipped)."""
    generator = random.Random(seed)
    lines = []
    for index in range(count):
        roll = generator.random()
        if roll < 0.03:
            lines.append(b"not json %d\n" % index)
        elif roll < 0.05:
            lines.append(b"   \n")
        else:
            lines.append(b'{"ts": %d, "n": %d}\n' % (generator.randrange(0, 400), index))
    return lines


def _stable_sorted(lines: list[bytes]) -> list[TimedLine]:
    return sorted(((event_time(line), line) for line in lines if line.strip()), key=lambda x: x[0])


def _sort_folders(root: Path) -> list[Path]:
    return sorted(root.glob("driftline-sort-*"))


@pytest.fixture(autouse=True, params=["megabyte chunks", "chunks of a few lines"])
def chunk_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs twice: with the real sizes (a test file is one chunk, one block) and with
    chunks and blocks of a few lines, so that lines held aside, order checks, cursor batches and
    merges cross the edges between chunks and blocks."""
    if request.param == "chunks of a few lines":
        monkeypatch.setattr(line_files, "_READ_BUFFER_BYTES", 100)
        monkeypatch.setattr(time_ordered_lines, "_BLOCK_LINES", 3)


@pytest.fixture
def temporary_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("sort_memory_bytes", "max_runs_merged"),
    [(10**9, 128), (20_000, 128), (1, 128), (1, 3)],
    ids=["in-memory", "runs", "run-per-line", "merged-in-passes"],
)
def test_out_of_order_file_is_read_in_stable_time_order(
    tmp_path: Path,
    temporary_root: Path,
    sorted_runs_written: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    sort_memory_bytes: int,
    max_runs_merged: int,
) -> None:
    monkeypatch.setattr(time_ordered_lines, "MAX_RUNS_MERGED", max_runs_merged)
    lines = _lines(2_000, seed)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    expected = _stable_sorted(lines)
    timed = [time_ms for time_ms, _ in expected if time_ms >= 0]

    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=sort_memory_bytes) as ordered:
        runs = len(sorted_runs_written)
        # A run closes once its lines cost sort_memory_bytes (a line costs 100 bytes extra).
        costs = [len(line) + 100 for _, line in expected]
        if sum(costs) <= sort_memory_bytes:
            assert runs == 0
            assert _sort_folders(temporary_root) == []
        else:
            fewest = math.ceil(sum(costs) / (sort_memory_bytes + max(costs)))
            assert fewest <= runs <= math.ceil(sum(costs) / sort_memory_bytes)
            assert runs > 1
            # What is left to merge as the lines are read: at most max_runs_merged runs.
            (folder,) = _sort_folders(temporary_root)
            assert 1 <= len(list(folder.iterdir())) <= max_runs_merged
        assert list(ordered) == expected
        assert list(ordered) == expected, "a second pass reads the same"
        assert (ordered.count, ordered.first_ms, ordered.last_ms) == (
            len(expected),
            min(timed),
            max(timed),
        )
    assert _sort_folders(temporary_root) == [], "the runs are removed on close"


def test_a_file_out_of_order_that_fits_the_sort_memory_is_sorted_there(
    tmp_path: Path, temporary_root: Path
) -> None:
    # Long lines, as real events are: too big to skip the scan, small enough to sort in memory.
    lines = [line.replace(b"}", b', "pad": "%s"}' % (b"x" * 600)) for line in _lines(2_000, 4)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=2 * size) as ordered:
        assert _sort_folders(temporary_root) == []
        assert list(ordered) == _stable_sorted(lines)


def test_file_in_order_is_streamed_without_copies(
    tmp_path: Path, temporary_root: Path, sorted_runs_written: list[Path]
) -> None:
    lines = [b'{"ts": %d}\n' % (index // 3) for index in range(3_000)]
    # Lines without a time (first, in the middle, last) are held aside, not a reason to sort.
    lines[0:0], lines[1_500:1_500], lines[-1:-1] = [b"garbage 1\n"], [b"garbage 2\n"], [b"{}\n"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    # 1,000 bytes: far less than the file, enough for its three lines without a time.
    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=1_000) as ordered:
        assert list(ordered) == _stable_sorted(lines)
        assert _sort_folders(temporary_root) == []
    assert (ordered.count, ordered.first_ms, ordered.last_ms) == (3_003, 0, 999)
    assert sorted_runs_written == []

    # With too little memory to hold those three lines aside, the file is sorted on disk.
    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=200) as ordered:
        assert list(ordered) == _stable_sorted(lines)
    assert len(sorted_runs_written) > 1


def test_lines_without_a_time_are_held_aside_within_one_budget_for_all_files(
    tmp_path: Path, sorted_runs_written: list[Path]
) -> None:
    # Each file: 300 lines in order, with 4 lines without a time (4 x 110 bytes held aside)
    # after the first line.
    paths, everything = [], []
    for number in range(2):
        content = [b'{"ts": %d, "file": %d}\n' % (index, number) for index in range(300)]
        content[1:1] = [b"garbage %d\n" % index for index in range(4)]
        path = tmp_path / f"part-{number}.jsonl"
        path.write_bytes(b"".join(content))
        paths.append(path)
        everything += content
    # 700 bytes hold the first file's four lines, not the second's as well.
    with TimeOrderedLines.open(paths, event_time, sort_memory_bytes=700) as ordered:
        assert list(ordered) == _stable_sorted(everything)
    assert sorted_runs_written, "the second file was sorted"
    assert {path.name.split("-")[1] for path in sorted_runs_written} == {"000001"}


def _compressed(path: Path, compression: str) -> Path:
    compress = gzip.compress if compression == "gzip" else zstd.compress
    compressed = path.with_name(f"{path.name}.{compression}")
    # Two gzip members or zstd frames, as appending to a compressed export makes: both are read.
    content = path.read_bytes()
    half = len(content) // 2
    compressed.write_bytes(compress(content[:half]) + compress(content[half:]))
    path.unlink()
    return compressed


@pytest.mark.parametrize(
    ("sort_memory_bytes", "max_runs_merged"),
    [(10**9, 128), (100_000, 128), (1_000, 3)],
    ids=["sorted-in-memory", "runs", "merged-in-passes"],
)
def test_several_files_are_read_in_the_stable_order_of_their_concatenation(
    tmp_path: Path,
    temporary_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    sort_memory_bytes: int,
    max_runs_merged: int,
) -> None:
    monkeypatch.setattr(time_ordered_lines, "MAX_RUNS_MERGED", max_runs_merged)
    shuffled = [_lines(1_000, seed) for seed in (5, 6)]
    in_order = [_stable_sorted(_lines(1_000, seed)) for seed in (7, 8)]
    contents = [
        shuffled[0],
        [line for _, line in in_order[0]],
        shuffled[1],
        [line for _, line in in_order[1]],
    ]
    paths = []
    for content, compression in zip(contents, (None, None, "gzip", "zstd"), strict=True):
        path = tmp_path / f"part-{len(paths)}.jsonl"
        path.write_bytes(b"".join(content))
        paths.append(path if compression is None else _compressed(path, compression))
    everything = [line for content in contents for line in content]

    with TimeOrderedLines.open(paths, event_time, sort_memory_bytes=sort_memory_bytes) as ordered:
        assert list(ordered) == _stable_sorted(everything)
        assert list(ordered) == _stable_sorted(everything), "a second pass reads the same"
        timed = [time_ms for time_ms, _ in _stable_sorted(everything) if time_ms >= 0]
        assert (ordered.count, ordered.first_ms, ordered.last_ms) == (
            len(_stable_sorted(everything)),
            min(timed),
            max(timed),
        )
    assert _sort_folders(temporary_root) == [], "the runs are removed on close"


def test_many_files_in_order_are_merged_in_passes_without_sorting(
    tmp_path: Path,
    temporary_root: Path,
    sorted_runs_written: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time_ordered_lines, "MAX_RUNS_MERGED", 3)
    paths, everything = [], []
    for partition in range(8):
        # Partition p holds every 8th event; times repeat across partitions.
        content = [b'{"ts": %d, "p": %d}\n' % (index // 16, partition) for index in range(400)]
        path = tmp_path / f"partition-{partition}.jsonl"
        path.write_bytes(b"".join(content))
        paths.append(path)
        everything += content
    with TimeOrderedLines.open(paths, event_time, sort_memory_bytes=1_000) as ordered:
        assert len(_sort_folders(temporary_root)) == 1, "merged in passes through the disk"
        assert list(ordered) == _stable_sorted(everything)
    assert sorted_runs_written == [], "nothing was sorted"
    assert _sort_folders(temporary_root) == []
    assert [path.exists() for path in paths] == [True] * 8, "the inputs are left alone"


def test_a_damaged_compressed_file_is_an_os_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(_lines(2_000, 9)))[:-50])
    with pytest.raises(OSError, match="damaged gzip data") as raised:
        list(nonblank_lines(path))
    assert raised.value.errno == errno.EIO and raised.value.filename == str(path)
    path.write_bytes(b"\x1f\x8b" + b"not deflate data" * 100)
    with (
        pytest.raises(OSError, match="damaged gzip data") as raised,
        TimeOrderedLines.open([path], event_time, sort_memory_bytes=1),
    ):
        pytest.fail("opening reads every line once, so a damaged file fails before a replay")
    assert raised.value.filename == str(path)
    # A valid header, then a corrupt deflate stream: the decompressor's own error, not gzip's.
    corrupt = bytearray(gzip.compress(b"".join(_lines(2_000, 9))))
    corrupt[40:60] = bytes(byte ^ 0xFF for byte in corrupt[40:60])
    path.write_bytes(bytes(corrupt))
    with pytest.raises(OSError, match="damaged gzip data") as raised:
        list(nonblank_lines(path))
    assert raised.value.errno == errno.EIO and raised.value.filename == str(path)


def test_a_damaged_zstd_file_is_an_os_error_naming_it(tmp_path: Path) -> None:
    content = zstd.compress(b"".join(_lines(2_000, 9)))
    corrupt = bytearray(content)
    corrupt[40:60] = bytes(byte ^ 0xFF for byte in corrupt[40:60])
    path = tmp_path / "events.jsonl.zst"
    for damaged, reason in (
        (content[:-50], "Compressed file ended before the end-of-stream marker"),
        (content[:4], "Compressed file ended before the end-of-stream marker"),
        (bytes(corrupt), "Unable to decompress Zstandard data"),
        (content + b"not a frame", "Unable to decompress Zstandard data"),
    ):
        path.write_bytes(damaged)
        with pytest.raises(OSError, match=f"damaged zstd data \\({reason}") as raised:
            list(nonblank_lines(path))
        assert raised.value.errno == errno.EIO and raised.value.filename == str(path)


@pytest.fixture
def appended_after_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file gets one line more just after its scan, as a file still being written does."""
    scan = time_ordered_lines._scan

    def scan_then_append(path: Path, *arguments: Any) -> Any:
        scanned = scan(path, *arguments)
        with path.open("ab") as file:
            file.write(b'{"ts": 99999999}\n')
        return scanned

    monkeypatch.setattr(time_ordered_lines, "_scan", scan_then_append)


@pytest.mark.usefixtures("appended_after_the_scan")
def test_a_file_changed_between_the_scan_and_the_replay_is_an_os_error_naming_it(
    tmp_path: Path,
) -> None:
    lines = _stable_sorted(_lines(1_000, 13))
    in_order = tmp_path / "in-order.jsonl"
    in_order.write_bytes(b"".join(line for _, line in lines))
    # Streamed as the replay goes: the change is found when the file is read to its end.
    changed = f"changed while being read: {len(lines):,} lines at first, {len(lines) + 1:,} now"
    with TimeOrderedLines.open([in_order], event_time, sort_memory_bytes=1) as ordered:
        with pytest.raises(OSError, match=re.escape(changed)) as raised:
            list(ordered)
        assert raised.value.errno == errno.EIO and raised.value.filename == str(in_order)
    # Sorted on disk when opened: the change is found then.
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"".join(_lines(1_000, 14)))
    with (
        pytest.raises(OSError, match="changed while being read") as raised,
        TimeOrderedLines.open([shuffled], event_time, sort_memory_bytes=1),
    ):
        pytest.fail("the file is sorted on opening")
    assert raised.value.filename == str(shuffled)


def test_a_file_with_no_times_and_an_empty_file(
    tmp_path: Path, sorted_runs_written: list[Path]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x\n\ny\n")
    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == [(-1, b"x\n"), (-1, b"y\n")]
        assert (ordered.count, ordered.first_ms, ordered.last_ms) == (2, None, None)
    # Labels may have no time at all: such a file is in order, streamed however large.
    assert sorted_runs_written == []
    path.write_bytes(b"")
    with TimeOrderedLines.open([path], event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == [] and len(ordered) == 0


def _pipe(path: Path, content: bytes) -> threading.Thread:
    """A named pipe at ``path``, written ``content`` once by a thread (``join`` it)."""
    os.mkfifo(path)
    writer = threading.Thread(target=path.write_bytes, args=(content,))
    writer.start()
    return writer


@pytest.mark.timeout(30)  # a pipe opened twice waits for a second writer forever
@pytest.mark.parametrize("sort_memory_bytes", [10**9, 1], ids=["in-memory", "sorted-on-disk"])
def test_a_pipe_is_read_once_with_the_files(
    tmp_path: Path, temporary_root: Path, sort_memory_bytes: int
) -> None:
    # A file in order and a pipe out of order: with one byte of sort memory, the file is streamed
    # (read twice), and what the pipe held is sorted on disk.
    in_order = [line for _, line in _stable_sorted(_lines(1_000, 11))]
    shuffled = _lines(1_000, 12)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(in_order))
    pipe = tmp_path / "events.pipe"
    writer = _pipe(pipe, b"".join(shuffled))
    with TimeOrderedLines.open([path, pipe], event_time, sort_memory_bytes=sort_memory_bytes) as (
        ordered
    ):
        writer.join()
        (copies,) = temporary_root.glob("driftline-pipes-*")
        expected = _stable_sorted(in_order + shuffled)
        assert list(ordered) == expected
        assert list(ordered) == expected, "a second pass reads the same"
        assert len(ordered) == len(expected)
    assert not copies.exists(), "the copy is removed on close"


@pytest.mark.timeout(30)
def test_a_compressed_pipe_is_decompressed_and_named_when_damaged(tmp_path: Path) -> None:
    lines = _lines(500, 10)
    pipe = tmp_path / "events.pipe"
    writer = _pipe(pipe, zstd.compress(b"".join(lines)))
    with TimeOrderedLines.open([pipe], event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == _stable_sorted(lines)
    writer.join()
    pipe.unlink()
    writer = _pipe(pipe, gzip.compress(b"".join(lines))[:-50])
    with (
        pytest.raises(OSError, match="damaged gzip data") as raised,
        TimeOrderedLines.open([pipe], event_time, sort_memory_bytes=1),
    ):
        pytest.fail("the damage is found on opening")
    writer.join()
    assert raised.value.filename == str(pipe)


def test_sort_memory_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sort_memory_bytes must be at least 1, got 0"):
        TimeOrderedLines.open([tmp_path / "events.jsonl"], event_time, sort_memory_bytes=0)


def test_cursor_takes_the_lines_before_a_time_in_batches() -> None:
    lines = [b'{"ts": %d}' % time_ms for time_ms in (5, 1, 3, 3, 9, 2, 7)]
    cursor = LineCursor(TimeOrderedLines.from_lines(lines, event_time))
    assert cursor.next_ms == 1 and cursor.last_ms == -1
    batches = list(cursor.batches_before(5, batch_size=2))
    assert [batch.times_ms.tolist() for batch in batches] == [[1, 2], [3, 3]]
    assert (cursor.next_ms, cursor.last_ms) == (5, 3)
    assert list(cursor.batches_before(5, batch_size=2)) == []
    assert [len(batch) for batch in cursor.batches_before(100, batch_size=2)] == [2, 1]
    assert (cursor.next_ms, cursor.last_ms) == (None, 9)
