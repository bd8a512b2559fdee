"""Line reading: CPU time per line of ``driftline.line_files`` on plain, gzip and zstd files.

Writes ``--lines`` seeded events (20 numeric features, about 600 bytes each) as a plain file, a
gzip file (level 6) and a zstd file (level 3), then reads each with
``line_files.nonblank_line_chunks``, as backtest and ``baseline build`` do (backtest reads every
compressed file twice). ``gzip_stdlib`` reads the gzip file with the standard library's
``gzip`` in the same buffering, the decompressor ISA-L replaced. Prints, for each, the least CPU
time per line (µs) of ``--repeats`` interleaved runs, and the compressed sizes.

    python bench/line_reading.py [--lines 300000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from driftline.line_files import nonblank_line_chunks, zstd

# line_files' buffering, so only the decompressor differs.
BUFFER_BYTES = 1024 * 1024


def _standard_library_gzip(path: Path) -> Iterator[list[bytes]]:
    with path.open("rb", buffering=BUFFER_BYTES) as raw:
        file = io.BufferedReader(gzip.GzipFile(fileobj=raw), buffer_size=BUFFER_BYTES)
        while chunk := file.readlines(BUFFER_BYTES):
            yield [line for line in chunk if not line.isspace()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    generator = random.Random(1)
    content = b"".join(
        json.dumps(
            {
                "event_id": f"e{index}",
                "ts": 1_700_000_000_000 + index,
                "features": {f"f{feature}": generator.gauss(0, 1) for feature in range(20)},
            }
        ).encode()
        + b"\n"
        for index in range(arguments.lines)
    )
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        plain, gzipped, zstd_path = (folder / name for name in ("l.jsonl", "l.gz", "l.zst"))
        plain.write_bytes(content)
        gzipped.write_bytes(gzip.compress(content, 6))
        zstd_path.write_bytes(zstd.compress(content, 3))
        readers: dict[str, tuple[Callable[[Path], Iterator[list[bytes]]], Path]] = {
            "plain": (nonblank_line_chunks, plain),
            "gzip": (nonblank_line_chunks, gzipped),
            "gzip_stdlib": (_standard_library_gzip, gzipped),
            "zstd": (nonblank_line_chunks, zstd_path),
        }
        least = dict.fromkeys(readers, float("inf"))
        for _ in range(arguments.repeats):
            for name, (read, path) in readers.items():
                start = time.process_time()
                lines = sum(len(chunk) for chunk in read(path))
                seconds = time.process_time() - start
                assert lines == arguments.lines, (name, lines)
                least[name] = min(least[name], seconds / lines)
        sizes_mb = {
            f"{name}_mb": round(path.stat().st_size / 2**20, 1)
            for name, path in (("plain", plain), ("gzip", gzipped), ("zstd", zstd_path))
        }
    result = {
        "lines": arguments.lines,
        "bytes_per_line": len(content) // arguments.lines,
        **sizes_mb,
        "us_per_line": {name: round(seconds * 1e6, 2) for name, seconds in least.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
