"""The lines of JSON-lines files in event-time order, in bounded memory.

``driftline backtest`` replays recorded traffic in event-time order, and last month's traffic
does not fit in memory (held as Python objects, a 600-byte event costs about 800 bytes). It comes
as one file or several (a file per day, or per topic partition), plain or compressed (gzip,
zstd: :mod:`driftline.line_files`). The files are ordered together like this:

1. Plain files of at most a quarter of ``sort_memory_bytes`` in all are read and sorted in
   memory.
2. Otherwise one pass reads every line's time: how many lines, the first and last time, and
   whether each file is already in order (it usually is: one topic partition, or a time-sorted
   export). Lines without a time go first: those found after a line with a time are kept aside
   in memory, so a few malformed lines do not put a file out of order.
3. If every file is in order, each is read again, a megabyte at a time, as the replay goes, and
   the files are merged: nothing is held. A file read again must have as many lines as its scan
   counted, or it is an :class:`OSError` (it changed in between: still being written).
4. Otherwise, if the lines fit in ``sort_memory_bytes``, they are sorted in memory.
5. Otherwise a file in order is read as in 3, and one out of order is cut into runs of at most
   ``sort_memory_bytes``, each sorted in memory and written to a temporary folder. This needs
   free disk about the size of those files, uncompressed (``TMPDIR`` says where); the folder is
   removed on close.
6. The files and runs are merged as the replay goes; more than :data:`MAX_RUNS_MERGED` of them
   are first merged in passes, a group of consecutive ones at a time.

A pipe (``<(bzcat ...)``, ``/dev/stdin``) can be read only once, and lines that do not fit in
memory are read twice (2 and 3), so each path that is not a regular file is first copied
(:func:`driftline.line_files.pipes_copied`) and its copy is read as a file would be.

The order is always the one a stable sort of the files' lines, one file after the other, gives:
by time, and in file order among equal times (a merge takes the earlier file or run first on
equal times). A line without a readable time has time -1, so it comes first. Blank lines are
skipped.
"""

from __future__ import annotations

import errno
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from driftline.line_files import (
    is_compressed,
    nonblank_line_chunks,
    nonblank_lines,
    pipes_copied,
)

__all__ = [
    "LineBlock",
    "LineCursor",
    "TimeOf",
    "TimeOrderedLines",
    "TimedLine",
]

TimeOf = Callable[[bytes], int]
"""A line's time in epoch milliseconds, or -1 when it has none."""

TimedLine = tuple[int, bytes]

_BLOCK_LINES = 4096
"""Lines per block where lines are grouped by count (sorted in memory, merged)."""

_LINE_OVERHEAD_BYTES = 100
"""What a line costs in memory beyond its bytes while a run is sorted (objects, list, index)."""

_SMALL_INPUT_SHARE = 4
"""Plain files of at most this share of the sort memory in all are read into memory without a
scan (their lines, of 33 bytes or more, cost at most the sort memory)."""

MAX_RUNS_MERGED = 128
"""Files and runs merged at once (each is an open file); more are first merged in passes."""

_RECORD_HEADER = struct.Struct("<qI")  # time (ms), length of the line
_RUN_BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Consecutive lines in time order and their times: lines move a block at a time, because a
    Python step per line would cost more than reading the line."""

    times_ms: npt.NDArray[np.int64]
    lines: list[bytes]

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def read(cls, lines: list[bytes], time_of: TimeOf) -> LineBlock:
        """``lines`` with their times (in time order only if the lines are)."""
        return cls(np.fromiter(map(time_of, lines), np.int64, len(lines)), lines)

    @classmethod
    def joined(cls, blocks: Sequence[LineBlock]) -> LineBlock:
        if len(blocks) == 1:
            return blocks[0]
        return cls(
            np.concatenate([block.times_ms for block in blocks]),
            list(chain.from_iterable(block.lines for block in blocks)),
        )

    def sliced(self, start: int, stop: int) -> LineBlock:
        return LineBlock(self.times_ms[start:stop], self.lines[start:stop])

    def taken(self, positions: npt.NDArray[np.intp]) -> LineBlock:
        lines = self.lines
        return LineBlock(self.times_ms[positions], [lines[p] for p in positions.tolist()])

    def timed_lines(self) -> Iterator[TimedLine]:
        return zip(self.times_ms.tolist(), self.lines, strict=True)


@dataclass(frozen=True)
class TimeOrderedLines:
    """Lines to replay, in event-time order: :meth:`blocks` yields them a block at a time,
    iterating yields ``(time_ms, line)``.

    ``count`` is the number of lines, ``first_ms`` and ``last_ms`` the earliest and latest time
    (None when no line has one). Build one with :meth:`from_lines` or :meth:`open`.
    """

    count: int
    first_ms: int | None
    last_ms: int | None
    blocks: Callable[[], Iterator[LineBlock]]

    def __iter__(self) -> Iterator[TimedLine]:
        return _timed_lines(self.blocks())

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_lines(cls, lines: Sequence[bytes], time_of: TimeOf) -> TimeOrderedLines:
        """Lines already in memory, sorted there."""
        times = np.fromiter(map(time_of, lines), dtype=np.int64, count=len(lines))
        order = np.argsort(times, kind="stable")
        ordered_times = times[order]
        timed = ordered_times[ordered_times >= 0]

        def blocks() -> Iterator[LineBlock]:
            for start in range(0, len(lines), _BLOCK_LINES):
                positions = order[start : start + _BLOCK_LINES].tolist()
                block_times = ordered_times[start : start + _BLOCK_LINES]
                yield LineBlock(block_times, [lines[position] for position in positions])

        return cls(
            count=len(lines),
            first_ms=int(timed[0]) if len(timed) else None,
            last_ms=int(timed[-1]) if len(timed) else None,
            blocks=blocks,
        )

    @classmethod
    def of(cls, lines: TimeOrderedLines | Sequence[bytes], time_of: TimeOf) -> TimeOrderedLines:
        """``lines`` as they are when already ordered, else sorted in memory."""
        return lines if isinstance(lines, TimeOrderedLines) else cls.from_lines(lines, time_of)

    @staticmethod
    def open(
        paths: Sequence[Path],
        time_of: TimeOf,
        *,
        sort_memory_bytes: int,
    ) -> AbstractContextManager[TimeOrderedLines]:
        """The lines of the files at ``paths``, together (see the module docstring for how).

        Use as a context manager: leaving it removes any sorted runs written to disk.
        Raises :class:`OSError` when a file cannot be read or the runs cannot be written.
        """
        if sort_memory_bytes < 1:
            raise ValueError(f"sort_memory_bytes must be at least 1, got {sort_memory_bytes!r}")
        return _open(paths, time_of, sort_memory_bytes)


@dataclass
class _Scan:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    in_order: bool = True
    """Whether the lines with a time are in order (those without one go first: the ones after
    the first line with a time are in ``held``)."""
    memory_bytes: int = 0
    held: list[bytes] = field(default_factory=list)
    held_bytes: int = 0


def _scan(path: Path, time_of: TimeOf, hold_budget_bytes: int) -> _Scan:
    """One pass over a file; its lines without a time are held while they cost at most
    ``hold_budget_bytes`` (a malformed line or two must not send a file to be sorted)."""
    scan = _Scan()
    for chunk in nonblank_line_chunks(path):
        block = LineBlock.read(chunk, time_of)
        scan.count += len(block)
        scan.memory_bytes += _memory_bytes(chunk)
        timed = block.times_ms >= 0
        times = block.times_ms[timed]
        if len(times) < len(block) and scan.in_order:
            # Before the first line with a time they are in place; after one, they are held.
            untimed = np.flatnonzero(~timed)
            if scan.last_ms is None:
                untimed = untimed[untimed > np.argmax(timed)] if len(times) else untimed[:0]
            held = [chunk[position] for position in untimed.tolist()]
            scan.held += held
            scan.held_bytes += _memory_bytes(held)
            scan.in_order = scan.held_bytes <= hold_budget_bytes
        if not len(times):
            continue
        if np.any(times[1:] < times[:-1]) or (scan.last_ms is not None and times[0] < scan.last_ms):
            scan.in_order = False
        first_ms, last_ms = int(times.min()), int(times.max())
        scan.first_ms = first_ms if scan.first_ms is None else min(scan.first_ms, first_ms)
        scan.last_ms = last_ms if scan.last_ms is None else max(scan.last_ms, last_ms)
    if not scan.in_order:  # the file is sorted whole: nothing to hold aside
        scan.held, scan.held_bytes = [], 0
    return scan


@dataclass(frozen=True)
class _Source:
    """Lines in time order to merge: an input file in order, or a sorted run on disk."""

    read: Callable[[], Iterator[LineBlock]]
    run_path: Path | None = None
    """The run's file, removed once merged into a bigger run; None for an input file."""


def _memory_bytes(lines: Sequence[bytes]) -> int:
    """What ``lines`` cost held in memory."""
    return sum(map(len, lines)) + _LINE_OVERHEAD_BYTES * len(lines)


def _read_blocks(path: Path, time_of: TimeOf) -> Iterator[LineBlock]:
    return (LineBlock.read(chunk, time_of) for chunk in nonblank_line_chunks(path) if chunk)


def _read_again(path: Path, time_of: TimeOf, scan: _Scan) -> Iterator[LineBlock]:
    """The file's lines, read after its scan. :class:`OSError` at the end if there are not as
    many as the scan counted: the file changed in between (still being written, or replaced)."""
    count = 0
    for block in _read_blocks(path, time_of):
        count += len(block)
        yield block
    if count != scan.count:
        message = f"changed while being read: {scan.count:,} lines at first, {count:,} now"
        raise OSError(errno.EIO, message, str(path))


def _read_in_order(path: Path, time_of: TimeOf, scan: _Scan) -> Iterator[LineBlock]:
    """A file whose lines with a time are in order. The lines without one that came after the
    first line with one were held aside by the scan: they join those before it (time -1 is the
    lowest), and are skipped where they stand."""
    blocks = _read_again(path, time_of, scan)
    if not scan.held:
        return blocks
    return _with_held_lines(blocks, scan.held)


def _with_held_lines(blocks: Iterator[LineBlock], held: list[bytes]) -> Iterator[LineBlock]:
    for block in blocks:
        timed = np.flatnonzero(block.times_ms >= 0)
        if not len(timed):
            yield block
            continue
        yield block.sliced(0, int(timed[0]))
        yield LineBlock(np.full(len(held), -1, dtype=np.int64), held)
        yield block.taken(timed)
        break
    for block in blocks:
        yield block.taken(np.flatnonzero(block.times_ms >= 0))


@contextmanager
def _open(
    paths: Sequence[Path], time_of: TimeOf, sort_memory_bytes: int
) -> Iterator[TimeOrderedLines]:
    with (
        pipes_copied(paths) as files,
        _open_files(files, time_of, sort_memory_bytes) as ordered,
    ):
        yield ordered


@contextmanager
def _open_files(
    paths: Sequence[Path], time_of: TimeOf, sort_memory_bytes: int
) -> Iterator[TimeOrderedLines]:
    small = sort_memory_bytes // _SMALL_INPUT_SHARE
    if not any(map(is_compressed, paths)) and sum(p.stat().st_size for p in paths) <= small:
        yield TimeOrderedLines.from_lines(_all_lines(paths), time_of)
        return
    scans: list[_Scan] = []
    for path in paths:
        # The lines held aside, of all files together, cost at most the sort memory.
        held_bytes = sum(scan.held_bytes for scan in scans)
        scans.append(_scan(path, time_of, sort_memory_bytes - held_bytes))
    firsts = [scan.first_ms for scan in scans if scan.first_ms is not None]
    lasts = [scan.last_ms for scan in scans if scan.last_ms is not None]
    count = sum(scan.count for scan in scans)
    first_ms, last_ms = min(firsts, default=None), max(lasts, default=None)
    all_in_order = all(scan.in_order for scan in scans)
    if not all_in_order and sum(scan.memory_bytes for scan in scans) <= sort_memory_bytes:
        yield TimeOrderedLines.from_lines(_all_lines(paths), time_of)
        return
    # No folder at all when nothing goes to disk (files in order, few enough to merge at once).
    needs_disk = not all_in_order or len(paths) > MAX_RUNS_MERGED
    spill = tempfile.TemporaryDirectory(prefix="driftline-sort-") if needs_disk else nullcontext("")
    with spill as folder_name:
        folder = Path(folder_name)
        sources: list[_Source] = []
        for number, (path, scan) in enumerate(zip(paths, scans, strict=True)):
            if scan.in_order:
                sources.append(_Source(partial(_read_in_order, path, time_of, scan)))
            else:
                blocks = _read_again(path, time_of, scan)
                runs = _write_sorted_runs(blocks, folder, f"run-{number:06d}", sort_memory_bytes)
                sources += [_Source(partial(_read_run, run), run) for run in runs]
        if len(sources) > MAX_RUNS_MERGED:
            sources = _merge_in_passes(sources, folder)
        yield TimeOrderedLines(count, first_ms, last_ms, partial(_merge, sources))


def _all_lines(paths: Sequence[Path]) -> list[bytes]:
    return [line for path in paths for line in nonblank_lines(path)]


def _write_sorted_runs(
    blocks: Iterator[LineBlock], folder: Path, prefix: str, sort_memory_bytes: int
) -> list[Path]:
    runs: list[Path] = []
    run: list[TimedLine] = []
    run_bytes = 0
    for item in _timed_lines(blocks):
        run.append(item)
        run_bytes += len(item[1]) + _LINE_OVERHEAD_BYTES
        if run_bytes >= sort_memory_bytes:
            runs.append(_write_run(run, folder / f"{prefix}-{len(runs):06d}"))
            run, run_bytes = [], 0
    if run:
        runs.append(_write_run(run, folder / f"{prefix}-{len(runs):06d}"))
    return runs


def _merge_in_passes(sources: list[_Source], folder: Path) -> list[_Source]:
    merge_pass = 0
    while len(sources) > MAX_RUNS_MERGED:
        # Consecutive sources merge into one, so they still follow file order: stable.
        merge_pass += 1
        merged: list[_Source] = []
        for first in range(0, len(sources), MAX_RUNS_MERGED):
            group = sources[first : first + MAX_RUNS_MERGED]
            path = folder / f"merged-{merge_pass}-{len(merged):06d}"
            records = _timed_lines(_merge(group))
            merged.append(_Source(partial(_read_run, _write_records(records, path)), path))
            for done in group:
                if done.run_path is not None:
                    done.run_path.unlink()
        sources = merged
    return sources


def _write_run(run: list[TimedLine], path: Path) -> Path:
    run.sort(key=itemgetter(0))  # list.sort is stable: file order among equal times
    return _write_records(run, path)


def _write_records(records: Iterable[TimedLine], path: Path) -> Path:
    with path.open("wb", buffering=_RUN_BUFFER_BYTES) as file:
        for time_ms, line in records:
            file.write(_RECORD_HEADER.pack(time_ms, len(line)))
            file.write(line)
    return path


def _read_run(path: Path) -> Iterator[LineBlock]:
    return _blocks_of(_read_records(path))


def _read_records(path: Path) -> Iterator[TimedLine]:
    header_size = _RECORD_HEADER.size
    with path.open("rb", buffering=_RUN_BUFFER_BYTES) as file:
        while header := file.read(header_size):
            time_ms, length = _RECORD_HEADER.unpack(header)
            yield time_ms, file.read(length)


def _timed_lines(blocks: Iterable[LineBlock]) -> Iterator[TimedLine]:
    return chain.from_iterable(block.timed_lines() for block in blocks)


def _blocks_of(timed_lines: Iterator[TimedLine]) -> Iterator[LineBlock]:
    while group := list(islice(timed_lines, _BLOCK_LINES)):
        times = np.fromiter(map(itemgetter(0), group), np.int64, len(group))
        yield LineBlock(times, list(map(itemgetter(1), group)))


def _merge(sources: Sequence[_Source]) -> Iterator[LineBlock]:
    if len(sources) == 1:
        return sources[0].read()
    return _merged([source.read() for source in sources])


def _merged(streams: list[Iterator[LineBlock]]) -> Iterator[LineBlock]:
    """Merges streams of blocks in time order, a block at a time.

    A stream's later lines are never earlier than its last line read, so every line earlier than
    the horizon (the lowest last time read of the streams not yet at their end) is known. Those
    lines are merged by one stable sort of the streams' pending lines laid end to end in stream
    order, so equal times keep stream order. Then the streams at the horizon read a block more.
    """
    pending = [LineBlock(np.empty(0, dtype=np.int64), []) for _ in streams]
    open_streams = set(range(len(streams)))

    def read_more(index: int) -> None:
        """Read the stream's next lines (past empty blocks), or close it at its end."""
        while (block := next(streams[index], None)) is not None:
            pending[index] = LineBlock.joined([pending[index], block])
            if len(block):
                return
        open_streams.discard(index)

    for index in range(len(streams)):
        read_more(index)
    while open_streams:
        horizon = min(int(pending[index].times_ms[-1]) for index in open_streams)
        known = []
        for index, block in enumerate(pending):
            cut = int(np.searchsorted(block.times_ms, horizon))
            known.append(block.sliced(0, cut))
            pending[index] = block.sliced(cut, len(block))
        yield from _sorted(known)
        for index in [index for index in open_streams if pending[index].times_ms[-1] == horizon]:
            read_more(index)
    yield from _sorted(pending)


def _sorted(blocks: list[LineBlock]) -> Iterator[LineBlock]:
    """The lines of ``blocks`` in one block, by a stable sort by time (nothing if none)."""
    joined = LineBlock.joined([block for block in blocks if len(block)] or blocks[:1])
    if len(joined):
        yield joined.taken(np.argsort(joined.times_ms, kind="stable"))


class LineCursor:
    """Reads time-ordered lines forward, for a replay that advances a clock tick by tick."""

    def __init__(self, lines: TimeOrderedLines) -> None:
        self._blocks = (block for block in lines.blocks() if len(block))
        self._block: LineBlock | None = next(self._blocks, None)
        self._position = 0
        """Of the next line to take in ``_block``."""
        self.last_ms = -1
        """Time of the last line taken (-1 before any line with a time)."""

    @property
    def next_ms(self) -> int | None:
        """Time of the next line, None when every line has been taken."""
        return None if self._block is None else int(self._block.times_ms[self._position])

    def batches_before(self, at_ms: int, batch_size: int) -> Iterator[LineBlock]:
        """Take every line with a time before ``at_ms``, in batches of at most ``batch_size``."""
        parts: list[LineBlock] = []
        size = 0
        while self._block is not None:
            block, start = self._block, self._position
            # Blocks are in time order: one binary search finds where ``at_ms`` begins.
            before = start + int(np.searchsorted(block.times_ms[start:], at_ms))
            stop = min(before, start + batch_size - size)
            if stop > start:
                parts.append(block.sliced(start, stop))
                size += stop - start
                self._position = stop
                self.last_ms = int(block.times_ms[stop - 1])
            if stop == len(block):
                self._block, self._position = next(self._blocks, None), 0
            elif stop == before:
                break  # the next line is at or after ``at_ms``
            if size == batch_size:
                yield LineBlock.joined(parts)
                parts, size = [], 0
        if parts:
            yield LineBlock.joined(parts)
