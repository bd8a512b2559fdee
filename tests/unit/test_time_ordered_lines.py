"""TimeOrderedLines: a JSON-lines file in the order of a stable sort by time, in bounded memory.

Every way of reading a file (already in order, sorted in memory, sorted in runs on disk) must
give exactly the order Python's stable ``sorted`` gives on the whole file held in memory.
"""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path

import pytest

from driftline import time_ordered_lines
from driftline.backtest import event_time
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

    with TimeOrderedLines.open(path, event_time, sort_memory_bytes=sort_memory_bytes) as ordered:
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
    with TimeOrderedLines.open(path, event_time, sort_memory_bytes=2 * size) as ordered:
        assert _sort_folders(temporary_root) == []
        assert list(ordered) == _stable_sorted(lines)


def test_file_in_order_is_streamed_without_copies(tmp_path: Path, temporary_root: Path) -> None:
    lines = [b"garbage\n"] + [b'{"ts": %d}\n' % (index // 3) for index in range(3_000)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    with TimeOrderedLines.open(path, event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == [(event_time(line), line) for line in lines]
        assert _sort_folders(temporary_root) == []
    assert (ordered.count, ordered.first_ms, ordered.last_ms) == (3_001, 0, 999)


def test_a_file_with_no_times_and_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x\n\ny\n")
    with TimeOrderedLines.open(path, event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == [(-1, b"x\n"), (-1, b"y\n")]
        assert (ordered.count, ordered.first_ms, ordered.last_ms) == (2, None, None)
    path.write_bytes(b"")
    with TimeOrderedLines.open(path, event_time, sort_memory_bytes=1) as ordered:
        assert list(ordered) == [] and len(ordered) == 0


def test_sort_memory_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sort_memory_bytes must be at least 1, got 0"):
        TimeOrderedLines.open(tmp_path / "events.jsonl", event_time, sort_memory_bytes=0)


def test_cursor_takes_the_lines_before_a_time_in_batches() -> None:
    lines = [b'{"ts": %d}' % time_ms for time_ms in (5, 1, 3, 3, 9, 2, 7)]
    cursor = LineCursor(TimeOrderedLines.from_lines(lines, event_time))
    assert cursor.next_ms == 1 and cursor.last_ms == -1
    batches = list(cursor.batches_before(5, batch_size=2))
    assert [[time_ms for time_ms, _ in batch] for batch in batches] == [[1, 2], [3, 3]]
    assert (cursor.next_ms, cursor.last_ms) == (5, 3)
    assert list(cursor.batches_before(5, batch_size=2)) == []
    assert [len(batch) for batch in cursor.batches_before(100, batch_size=2)] == [2, 1]
    assert (cursor.next_ms, cursor.last_ms) == (None, 9)
