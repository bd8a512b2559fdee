"""The lines of a JSON-lines file in event-time order, in bounded memory.

``driftline backtest`` replays recorded traffic in event-time order, and last month's traffic
does not fit in memory (held as Python objects, a 600-byte event costs about 800 bytes). So a
file is ordered like this:

1. A file of at most a quarter of ``sort_memory_bytes`` is read and sorted in memory.
2. Otherwise one pass reads every line's time: how many lines, the first and last time, and
   whether the file is already in order (it usually is: one topic partition, or a time-sorted
   export). A file in order is then read again, line by line, as it is replayed: nothing is held.
3. A file out of order whose lines fit in ``sort_memory_bytes`` is sorted in memory.
4. A larger one is cut into runs of at most ``sort_memory_bytes``, each sorted in memory and
   written to a temporary folder, and the runs are merged as they are replayed (more than
   :data:`MAX_RUNS_MERGED` runs are first merged in passes). This needs free disk about the size
   of the file (``TMPDIR`` says where); the folder is removed on close.

The order is always the one a stable sort of the whole file gives: by time, and in file order
among equal times (the merge takes earlier runs first on equal times). A line without a readable
time has time -1, so it comes first. Blank lines are skipped.
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

__all__ = [
    "LineCursor",
    "TimeOf",
    "TimeOrderedLines",
    "TimedLine",
]

TimeOf = Callable[[bytes], int]
"""A line's time in epoch milliseconds, or -1 when it has none."""

TimedLine = tuple[int, bytes]

_LINE_OVERHEAD_BYTES = 100
"""What a line costs in memory beyond its bytes while a run is sorted (objects, list, index)."""

_SMALL_FILE_SHARE = 4
"""A file of at most this share of the sort memory is read into memory without a scan (its
lines, of 33 bytes or more, cost at most the sort memory)."""

MAX_RUNS_MERGED = 128
"""Runs merged at once (each holds a file open); more runs are first merged in passes."""

_RECORD_HEADER = struct.Struct("<qI")  # time (ms), length of the line
_RUN_BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class TimeOrderedLines:
    """Lines to replay, in event-time order; iterating yields ``(time_ms, line)``.

    ``count`` is the number of lines, ``first_ms`` and ``last_ms`` the earliest and latest time
    (None when no line has one). Build one with :meth:`from_lines` or :meth:`open`.
    """

    count: int
    first_ms: int | None
    last_ms: int | None
    _iterate: Callable[[], Iterator[TimedLine]]

    def __iter__(self) -> Iterator[TimedLine]:
        return self._iterate()

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_lines(cls, lines: Sequence[bytes], time_of: TimeOf) -> TimeOrderedLines:
        """Lines already in memory, sorted there."""
        times = np.fromiter((time_of(line) for line in lines), dtype=np.int64, count=len(lines))
        order = np.argsort(times, kind="stable").tolist()
        timed = times[times >= 0]
        time_list = times.tolist()  # Python ints: no numpy scalar made per line replayed
        return cls(
            count=len(lines),
            first_ms=int(timed.min()) if len(timed) else None,
            last_ms=int(timed.max()) if len(timed) else None,
            _iterate=lambda: ((time_list[index], lines[index]) for index in order),
        )

    @staticmethod
    def open(
        path: Path,
        time_of: TimeOf,
        *,
        sort_memory_bytes: int,
    ) -> AbstractContextManager[TimeOrderedLines]:
        """The lines of the file at ``path`` (see the module docstring for how it is ordered).

        Use as a context manager: leaving it removes any sorted runs written to disk.
        Raises :class:`OSError` when the file cannot be read or the runs cannot be written.
        """
        if sort_memory_bytes < 1:
            raise ValueError(f"sort_memory_bytes must be at least 1, got {sort_memory_bytes!r}")
        return _open(path, time_of, sort_memory_bytes)


def _nonblank_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        for line in file:
            if line.strip():
                yield line


@dataclass
class _Scan:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    in_order: bool = True
    memory_bytes: int = 0


def _scan(path: Path, time_of: TimeOf) -> _Scan:
    scan = _Scan()
    previous = -1
    for line in _nonblank_lines(path):
        time_ms = time_of(line)
        scan.count += 1
        scan.memory_bytes += len(line) + _LINE_OVERHEAD_BYTES
        if time_ms < previous:
            scan.in_order = False
        previous = max(previous, time_ms)
        if time_ms >= 0:
            scan.first_ms = time_ms if scan.first_ms is None else min(scan.first_ms, time_ms)
            scan.last_ms = time_ms if scan.last_ms is None else max(scan.last_ms, time_ms)
    return scan


@contextmanager
def _open(path: Path, time_of: TimeOf, sort_memory_bytes: int) -> Iterator[TimeOrderedLines]:
    if path.stat().st_size <= sort_memory_bytes // _SMALL_FILE_SHARE:
        yield TimeOrderedLines.from_lines(list(_nonblank_lines(path)), time_of)
        return
    scan = _scan(path, time_of)

    def read() -> Iterator[TimedLine]:
        return ((time_of(line), line) for line in _nonblank_lines(path))

    if scan.in_order:
        yield TimeOrderedLines(scan.count, scan.first_ms, scan.last_ms, read)
    elif scan.memory_bytes <= sort_memory_bytes:
        yield TimeOrderedLines.from_lines(list(_nonblank_lines(path)), time_of)
    else:
        with tempfile.TemporaryDirectory(prefix="driftline-sort-") as folder:
            runs = _write_sorted_runs(read(), Path(folder), sort_memory_bytes)
            yield TimeOrderedLines(scan.count, scan.first_ms, scan.last_ms, lambda: _merge(runs))


def _write_sorted_runs(
    lines: Iterator[TimedLine], folder: Path, sort_memory_bytes: int
) -> list[Path]:
    runs: list[Path] = []
    run: list[TimedLine] = []
    run_bytes = 0
    for item in lines:
        run.append(item)
        run_bytes += len(item[1]) + _LINE_OVERHEAD_BYTES
        if run_bytes >= sort_memory_bytes:
            runs.append(_write_run(run, folder / f"run-{len(runs):06d}"))
            run, run_bytes = [], 0
    if run:
        runs.append(_write_run(run, folder / f"run-{len(runs):06d}"))
    merge_pass = 0
    while len(runs) > MAX_RUNS_MERGED:
        # Consecutive runs merge into one, so the runs still follow file order: stable.
        merge_pass += 1
        merged: list[Path] = []
        for first in range(0, len(runs), MAX_RUNS_MERGED):
            group = runs[first : first + MAX_RUNS_MERGED]
            path = folder / f"merged-{merge_pass}-{len(merged):06d}"
            merged.append(_write_records(_merge(group), path))
            for done in group:
                done.unlink()
        runs = merged
    return runs


def _write_run(run: list[TimedLine], path: Path) -> Path:
    run.sort(key=itemgetter(0))  # list.sort is stable: file order among equal times
    return _write_records(run, path)


def _write_records(records: Iterable[TimedLine], path: Path) -> Path:
    with path.open("wb", buffering=_RUN_BUFFER_BYTES) as file:
        for time_ms, line in records:
            file.write(_RECORD_HEADER.pack(time_ms, len(line)))
            file.write(line)
    return path


def _read_run(path: Path) -> Iterator[TimedLine]:
    header_size = _RECORD_HEADER.size
    with path.open("rb", buffering=_RUN_BUFFER_BYTES) as file:
        while header := file.read(header_size):
            time_ms, length = _RECORD_HEADER.unpack(header)
            yield time_ms, file.read(length)


def _merge(runs: list[Path]) -> Iterator[TimedLine]:
    # heapq.merge breaks ties by the position of the run, and runs follow file order: stable.
    return heapq.merge(*(_read_run(path) for path in runs), key=itemgetter(0))


class LineCursor:
    """Reads time-ordered lines forward, for a replay that advances a clock tick by tick."""

    def __init__(self, lines: Iterable[TimedLine]) -> None:
        self._lines = iter(lines)
        self._head = next(self._lines, None)
        self.last_ms = -1
        """Time of the last line taken (-1 before any line with a time)."""

    @property
    def next_ms(self) -> int | None:
        """Time of the next line, None when every line has been taken."""
        return None if self._head is None else self._head[0]

    def batches_before(self, at_ms: int, batch_size: int) -> Iterator[list[TimedLine]]:
        """Take every line with a time before ``at_ms``, in batches of at most ``batch_size``."""
        lines, head = self._lines, self._head  # locals: this loop runs once per replayed line
        batch: list[TimedLine] = []
        while head is not None and head[0] < at_ms:
            batch.append(head)
            head = next(lines, None)
            if len(batch) == batch_size:
                self._head, self.last_ms = head, batch[-1][0]
                yield batch
                batch = []
        self._head = head
        if batch:
            self.last_ms = batch[-1][0]
            yield batch
