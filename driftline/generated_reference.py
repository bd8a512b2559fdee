"""The ``--write`` entry point shared by the generated references (config, metrics, CLI)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_reference"]


def write_reference(render: Callable[[], str], description: str, argv: list[str] | None) -> int:
    """Print ``render()``, or write it to the file named by ``--write``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", type=Path, help="write here instead of stdout")
    arguments = parser.parse_args(argv)
    text = render()
    if arguments.write is None:
        sys.stdout.write(text)
    else:
        arguments.write.write_text(text, encoding="utf-8")
    return 0
