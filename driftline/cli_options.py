"""Command-line options more than one ``driftline`` command takes, defined once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

__all__ = [
    "config_option",
    "each_file_once",
    "event_files_argument",
    "exit_when_idle_option",
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

exit_when_idle_option = click.option(
    "--exit-when-idle",
    type=float,
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
