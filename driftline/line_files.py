"""Reading JSON-lines files, plain or compressed (gzip, zstd): recorded traffic for backtest and
baseline.

Recorded traffic is usually exported compressed (an object-store sink writes ``.json.gz`` or
``.json.zst``), so a file is read by what its first bytes say, whatever its name. gzip is
decompressed with ISA-L (``isal.igzip``, the standard library's ``gzip`` interface and errors):
less than half the cost of ``gzip`` a line, and backtest reads each file twice. zstd is read
through Python's own ``compression.zstd`` (the ``backports.zstd`` package before Python 3.14),
which, unlike the ``zstandard`` package, says when a file ends inside a frame. A damaged or
truncated compressed file is an :class:`OSError`, as an unreadable plain file is, so callers
handle both in one place.
"""

from __future__ import annotations

import errno
import gzip
import io
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO, cast

from isal import igzip, isal_zlib

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

# ``zstd`` is this Python's zstd module, for callers that write zstd files (tests, benches).
__all__ = ["is_compressed", "nonblank_line_chunks", "nonblank_lines", "pipes_copied", "zstd"]

# The decompressing files hand lines out of a small buffer; a larger one halves the cost of a
# line (measured for gzip). Also the size of a chunk of lines.
_READ_BUFFER_BYTES = 1024 * 1024
_COPY_BUFFER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Compression:
    name: str
    magic: bytes
    decompressed: Callable[[BinaryIO], io.BufferedIOBase]
    # What the decompressor raises for damaged data: EOFError is how both say "truncated", and
    # none of these is an OSError.
    errors: tuple[type[Exception], ...]


_COMPRESSIONS = (
    _Compression(
        "gzip",
        b"\x1f\x8b",
        lambda raw: igzip.GzipFile(fileobj=raw),  # type: ignore[no-untyped-call]  # untyped __init__
        # isal's stubs declare its error class as an instance of Exception. (igzip raises the
        # standard library's BadGzipFile for what is not gzip.)
        (EOFError, cast("type[Exception]", isal_zlib.error), gzip.BadGzipFile),
    ),
    _Compression("zstd", b"\x28\xb5\x2f\xfd", zstd.ZstdFile, (EOFError, zstd.ZstdError)),
)


@contextmanager
def pipes_copied(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """``paths``, each that is not a regular file replaced by a copy of what it held.

    A pipe (``<(bzcat ...)``, ``/dev/stdin``) can be read only once, but backtest and a sampled
    ``baseline build`` read their files twice, and a compressed file is known by its first
    bytes. So each pipe is copied, as it is read, to a temporary folder under ``TMPDIR`` (free
    disk about the size of what it holds), removed on close. An error reading a pipe or its copy
    names the pipe.
    """
    pipes = [path for path in paths if not path.is_file()]
    if not pipes:
        yield list(paths)
        return
    with tempfile.TemporaryDirectory(prefix="driftline-pipes-") as folder_name:
        folder = Path(folder_name)
        copies = {pipe: folder / f"pipe-{number:06d}" for number, pipe in enumerate(pipes)}
        try:
            for pipe, copy in copies.items():
                with pipe.open("rb") as source, copy.open("wb") as target:
                    shutil.copyfileobj(source, target, _COPY_BUFFER_BYTES)
            yield [copies.get(path, path) for path in paths]
        except OSError as error:
            copied = [pipe for pipe, copy in copies.items() if error.filename == str(copy)]
            if not copied:
                raise
            raise OSError(error.errno, error.strerror, str(copied[0])) from error


def _compression(path: Path) -> _Compression | None:
    """How the file at ``path`` is compressed, by its first bytes; None for plain lines.

    A pipe is not looked into, since that would lose what was read: it is taken as plain lines.
    Callers that may be given one copy it first (:func:`pipes_copied`).
    """
    if not path.is_file():
        return None
    with path.open("rb") as file:
        start = file.read(max(len(known.magic) for known in _COMPRESSIONS))
    return next((known for known in _COMPRESSIONS if start.startswith(known.magic)), None)


def is_compressed(path: Path) -> bool:
    """Whether the file at ``path`` is compressed (its size then says little of its lines)."""
    return _compression(path) is not None


def nonblank_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, with their line ends, skipping blank ones; decompressed if need be."""
    return chain.from_iterable(nonblank_line_chunks(path))


def nonblank_line_chunks(path: Path) -> Iterator[list[bytes]]:
    """:func:`nonblank_lines` about a megabyte at a time: for callers that work a batch at a time,
    without a Python step per line."""
    compression = _compression(path)
    with path.open("rb", buffering=_READ_BUFFER_BYTES) as raw:
        if compression is None:
            yield from _chunks(raw)
            return
        # BufferedReader reads any stream with readinto; its stubs ask for a raw one.
        decompressed = io.BufferedReader(
            cast("io.RawIOBase", compression.decompressed(raw)), buffer_size=_READ_BUFFER_BYTES
        )
        try:
            yield from _chunks(decompressed)
        except compression.errors as error:
            message = f"damaged {compression.name} data ({error})"
            raise OSError(errno.EIO, message, str(path)) from error


def _chunks(file: BinaryIO) -> Iterator[list[bytes]]:
    while chunk := file.readlines(_READ_BUFFER_BYTES):
        yield [line for line in chunk if not line.isspace()]
