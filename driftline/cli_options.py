"""Command-line options more than one ``driftline`` command takes, defined once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import click

__all__ = [
    "config_option",
    "each_file_once",
    "event_files_argument",
    "exit_when_idle_option",
    "finite",
    "runtime_option",
    "unreadable",
]

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML config file (defaults apply when omitted).",
)

runtime_option = click.option(
    "--runtime",
    type=click.Choice(["confluent", "faust"]),
    default="confluent",
    show_default=True,
    help="Consumer runtime: confluent-kafka, or a faust-streaming app (docs/runtimes.md).",
)


def finite(context: click.Context, parameter: click.Parameter, value: float | None) -> float | None:
    """Refuse nan and inf: nan passes a FloatRange (it compares false with either bound), inf one
    without an upper bound, and either would make a wait endless or break the arithmetic of a
    deadline."""
    if value is not None and not math.isfinite(value):
        problem = "is not a number" if math.isnan(value) else "is not a finite number"
        raise click.BadParameter(f"{value} {problem}", param=parameter)
    return value


exit_when_idle_option = click.option(
    "--exit-when-idle",
    type=click.FloatRange(min=0),
    callback=finite,
    default=None,
    metavar="SECONDS",
    help="Exit after this many seconds without a message (batch jobs, tests).",
)


def each_file_once(
    context: click.Context, parameter: click.Parameter, paths: tuple[Path, ...]
) -> tuple[Path, ...]:
    """Refuse a file given twice (by two globs, or through a symlink): it would be counted twice."""
    seen: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            raise click.BadParameter(f"{path} is given twice")
        seen.add(resolved)
    return paths


event_files_argument = click.argument(
    "events_paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=each_file_once,
)
"""Recorded events: JSON-lines files, plain, gzip or zstd (``driftline.line_files``)."""


def unreadable(error: OSError, paths: Sequence[Path], doing: str) -> click.ClickException:
    """An error reading event files, naming its file or folder, or else every path (a failed
    write to a temporary copy has no file name)."""
    where = error.filename if error.filename is not None else ", ".join(map(str, paths))
    return click.ClickException(f"{where}: {doing}: {error.strerror}")
