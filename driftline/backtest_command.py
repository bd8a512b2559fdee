"""``driftline backtest``: replay recorded events through the embedded live path (no Kafka, no
Redis) and print every drift transition as one JSON line, then a summary line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from driftline.cli_options import each_file_once, event_files_argument, unreadable

if TYPE_CHECKING:
    from driftline.time_ordered_lines import TimeOf, TimeOrderedLines

__all__ = ["backtest"]

PROGRESS_MIN_LINES = 100_000
"""Files with at least this many lines get a progress bar on stderr (unless --no-progress)."""

SORT_MEMORY_MB = 256
"""Default --sort-memory-mb: files out of event-time order and larger are sorted on disk."""


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
    "labels_paths",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    callback=each_file_once,
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
    "--sort-memory-mb",
    type=click.IntRange(min=1),
    default=SORT_MEMORY_MB,
    show_default=True,
    help="Memory for putting files that are out of event-time order in order; more is sorted in "
    "runs on disk (TMPDIR), needing free space about the size of those files, uncompressed.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help=f"Progress bar on stderr (default: for files of {PROGRESS_MIN_LINES:,}+ lines).",
)
@event_files_argument
def backtest(
    config_path: Path | None,
    reference_paths: tuple[Path, ...],
    labels_paths: tuple[Path, ...],
    tick_seconds: float | None,
    verdict_every_seconds: float | None,
    sort_memory_mb: int,
    progress: bool | None,
    events_paths: tuple[Path, ...],
) -> None:
    """Replay EVENTS_PATHS (JSON lines, plain, gzip or zstd; several files are replayed together)
    at event time; print drift transitions, then a summary.

    Output (stdout), one JSON object per line: {"kind": "drift", "model", "version",
    "deployment", "segment", "feature", "state": "drifted"|"ok", "at" (event time, epoch ms),
    "stat", "value", "threshold", "window"} for every change (with "shift_sd", the net shift
    in sd, when "window" is "sequential"), then {"kind": "summary", ...}.
    The same input always gives byte-identical output. Files larger than memory are read as
    they are replayed; one out of event-time order is sorted first, on disk if it must be. A
    pipe (/dev/stdin, <(bzcat ...)) is copied to TMPDIR as it is read, then read as a file.
    """
    from alerting.drift_figures import DriftTransition
    from detectors.reference import Reference, ReferenceFormatError
    from driftline.backtest import Backtest, event_time
    from driftline.cli import _config
    from driftline.config import ConfigError
    from driftline.label_replay import label_time

    config = _config(config_path)
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
    out = click.get_text_stream("stdout")

    def emit(transition: DriftTransition) -> None:
        out.write(transition.to_json() + "\n")

    with ExitStack() as files:
        events = _open_lines(files, events_paths, event_time, sort_memory_mb)
        labels = (
            _open_lines(files, labels_paths, label_time, sort_memory_mb) if labels_paths else ()
        )
        try:
            replay = Backtest(
                config,
                references,
                on_transition=emit,
                tick_seconds=tick_seconds,
                on_alert=lambda line: out.write(line + "\n"),
                label_lines=labels,
                on_quality=lambda transition: out.write(transition.to_json() + "\n"),
                on_verdict=lambda line: out.write(line + "\n"),
                verdict_every_seconds=verdict_every_seconds,
            )
        except ConfigError as error:  # a rollout policy naming an unknown rule or class
            raise click.ClickException(str(error)) from None
        try:
            if events.count >= PROGRESS_MIN_LINES if progress is None else progress:
                from rich.console import Console
                from rich.progress import Progress

                with Progress(console=Console(file=sys.stderr), transient=True) as bar:
                    name = events_paths[0].name if len(events_paths) == 1 else "the files"
                    task = bar.add_task(f"replaying {name}", total=events.count)
                    summary = replay.replay(events, lambda done: bar.update(task, completed=done))
            else:
                summary = replay.replay(events)
        except OSError as error:  # a file read again as it is replayed, changed since
            raise unreadable(error, [*events_paths, *labels_paths], "cannot replay") from None
    out.write(json.dumps(summary.to_dict()) + "\n")
    out.flush()
    click.echo(
        f"replayed {events.count:,} lines, {summary.ticks:,} ticks in "
        f"{time.monotonic() - started:.1f}s",
        err=True,
    )


def _open_lines(
    files: ExitStack, paths: Sequence[Path], time_of: TimeOf, sort_memory_mb: int
) -> TimeOrderedLines:
    from driftline.time_ordered_lines import TimeOrderedLines

    try:
        return files.enter_context(
            TimeOrderedLines.open(paths, time_of, sort_memory_bytes=sort_memory_mb * 2**20)
        )
    except OSError as error:
        # Reading a file (damaged compressed data), or writing sorted runs (a full or missing
        # TMPDIR).
        raise unreadable(error, paths, "cannot read or sort") from None
