"""``driftline backtest``: replay recorded events through the embedded live path (no Kafka, no
Redis) and print every drift transition as one JSON line, then a summary line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

__all__ = ["backtest"]

PROGRESS_MIN_LINES = 100_000
"""Files with at least this many lines get a progress bar on stderr (unless --no-progress)."""


def read_lines(path: Path) -> list[bytes]:
    """The non-blank lines of a JSONL file, as bytes."""
    try:
        with path.open("rb") as file:
            return [line for line in file if line.strip()]
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read: {error.strerror}") from None


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML config file (defaults apply when omitted): windows, drift policy, tick interval.",
)
@click.option(
    "--reference",
    "reference_paths",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Reference JSON (from `driftline baseline`); once per model. Models without one are "
    "replayed without drift figures.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labels JSONL (label-event schema), replayed at label time and joined with the "
    'events; prints a {"kind": "quality"} line when a quality.thresholds line is crossed.',
)
@click.option(
    "--tick-seconds",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Evaluate every this many seconds of event time (default: evaluator.tick_seconds).",
)
@click.option(
    "--verdict-every",
    "verdict_every_seconds",
    type=click.FloatRange(min=0.001),
    default=None,
    metavar="SECONDS",
    help="Ask the rollout gate this often (event time) about every canary and shadow version; "
    'print each answer as a {"kind": "verdict"} line (docs/rollout-gate.md).',
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help=f"Progress bar on stderr (default: for files of {PROGRESS_MIN_LINES:,}+ lines).",
)
@click.argument("events_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def backtest(
    config_path: Path | None,
    reference_paths: tuple[Path, ...],
    labels_path: Path | None,
    tick_seconds: float | None,
    verdict_every_seconds: float | None,
    progress: bool | None,
    events_path: Path,
) -> None:
    """Replay EVENTS_PATH (JSON lines) at event time; print drift transitions, then a summary.

    Output (stdout), one JSON object per line: {"kind": "drift", "model", "version",
    "deployment", "segment", "feature", "state": "drifted"|"ok", "at" (event time, epoch ms),
    "stat", "value", "threshold", "window"} for every change, then {"kind": "summary", ...}.
    The same input always gives byte-identical output.
    """
    from alerting.drift_figures import DriftTransition
    from detectors.reference import Reference, ReferenceFormatError
    from driftline.backtest import Backtest
    from driftline.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    references = []
    for path in reference_paths:
        try:
            references.append(Reference.from_json(path.read_bytes()))
        except (OSError, ReferenceFormatError) as error:
            raise click.ClickException(f"--reference {path}: {error}") from None
    models = [reference.model for reference in references]
    if len(set(models)) != len(models):
        raise click.UsageError(f"--reference: one reference per model, got models {models}")

    started = time.monotonic()
    lines = read_lines(events_path)
    show_progress = len(lines) >= PROGRESS_MIN_LINES if progress is None else progress
    out = click.get_text_stream("stdout")

    def emit(transition: DriftTransition) -> None:
        out.write(transition.to_json() + "\n")

    try:
        replay = Backtest(
            config,
            references,
            on_transition=emit,
            tick_seconds=tick_seconds,
            on_alert=lambda line: out.write(line + "\n"),
            label_lines=[] if labels_path is None else read_lines(labels_path),
            on_quality=lambda transition: out.write(transition.to_json() + "\n"),
            on_verdict=lambda line: out.write(line + "\n"),
            verdict_every_seconds=verdict_every_seconds,
        )
    except ConfigError as error:  # a rollout policy naming an unknown rule or class
        raise click.ClickException(str(error)) from None
    if show_progress:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(file=sys.stderr), transient=True) as bar:
            task = bar.add_task(f"replaying {events_path.name}", total=len(lines))
            summary = replay.replay(lines, lambda done: bar.update(task, completed=done))
    else:
        summary = replay.replay(lines)
    out.write(json.dumps(summary.to_dict()) + "\n")
    out.flush()
    click.echo(
        f"replayed {len(lines):,} lines, {summary.ticks:,} ticks in "
        f"{time.monotonic() - started:.1f}s",
        err=True,
    )
