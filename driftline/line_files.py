"""Reading JSON-lines files, plain or gzip-compressed: recorded traffic for backtest and baseline.

Recorded traffic is usually exported compressed (an object-store sink writes ``.json.gz``), so a
file that starts with gzip's magic bytes is read as gzip, whatever its name. It is decompressed
with ISA-L (``isal.igzip``, the standard library's ``gzip`` interface and errors): less than half
the cost of ``gzip`` a line, and backtest reads each file twice. A damaged or truncated compressed
file is an :class:`OSError`, as an unreadable plain file is, so callers handle both in one place.
"""

from __future__ import annotations

import errno
import gzip
import io
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import cast

from isal import igzip, isal_zlib

__all__ = ["is_compressed", "nonblank_line_chunks", "nonblank_lines"]

_GZIP_MAGIC = b"\x1f\x8b"
# GzipFile hands lines out of a small buffer; a larger one halves the cost of a line. Also the
# size of a chunk of lines.
_READ_BUFFER_BYTES = 1024 * 1024
# A corrupt deflate stream. (isal's stubs declare this class as an instance of Exception.)
_CORRUPT_DEFLATE = cast("type[Exception]", isal_zlib.error)


def is_compressed(path: Path) -> bool:
    """Whether the file at ``path`` is gzip-compressed (its size then says little of its lines).

    A pipe (``backtest <(zcat ...)``) can be read only once, so it is not looked into: it is
    taken as plain lines.
    """
    if not path.is_file():
        return False
    with path.open("rb") as file:
        return file.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC


def nonblank_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, with their line ends, skipping blank ones; gzip is decompressed."""
    return chain.from_iterable(nonblank_line_chunks(path))


def nonblank_line_chunks(path: Path) -> Iterator[list[bytes]]:
    """:func:`nonblank_lines` about a megabyte at a time: for callers that work a batch at a time,
    without a Python step per line."""
    compressed = is_compressed(path)
    with path.open("rb", buffering=_READ_BUFFER_BYTES) as raw:
        file = (
            io.BufferedReader(
                igzip.GzipFile(fileobj=raw),  # type: ignore[no-untyped-call]  # untyped __init__
                buffer_size=_READ_BUFFER_BYTES,
            )
            if compressed
            else raw
        )
        try:
            while chunk := file.readlines(_READ_BUFFER_BYTES):
                yield [line for line in chunk if not line.isspace()]
        except (EOFError, _CORRUPT_DEFLATE, gzip.BadGzipFile) as error:
            # EOFError is how gzip says "truncated"; neither it nor a corrupt deflate stream's
            # error is an OSError. (igzip raises the standard library's BadGzipFile.)
            raise OSError(errno.EIO, f"damaged gzip data ({error})", str(path)) from error
