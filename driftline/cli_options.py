"""Command-line options more than one ``driftline`` command takes, defined once."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["config_option", "exit_when_idle_option", "runtime_option"]

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
