"""``driftline baseline``: build, freeze, import, export and delete drift references.

A model has one reference in Redis (under its hash tag); consumers and evaluators pick up a new
one within ``drift.reference_refresh_seconds``. Files are the reference's canonical JSON.
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from driftline.cli_options import config_option, event_files_argument, unreadable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from detectors.reference import Reference
    from detectors.stores.redis_reference_store import RedisReferenceStore
    from driftline.config import Config

__all__ = ["baseline"]

SAMPLE_SIZE = 1_000_000
"""Default --sample-size: ``detectors.reference_builder.SAMPLE_SIZE``, repeated here so that the
command line starts without numpy."""

output_option = click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the reference JSON to this file.",
)
model_option = click.option("--model", required=True, help="Model name.")


def _references(config: Config) -> tuple[RedisReferenceStore, Any]:
    """The Redis reference store, and the window store beside it."""
    from detectors.stores.redis_reference_store import RedisReferenceStore
    from driftline.cli import open_store

    windows = open_store(config)
    return RedisReferenceStore(windows.client, windows.keys), windows


def _write(reference: Reference, output_path: Path | None) -> None:
    if output_path is None:
        return
    try:
        output_path.write_text(reference.to_json() + "\n", encoding="utf-8")
    except OSError as error:
        raise click.ClickException(f"--output {output_path}: {error.strerror}") from None


def _describe(reference: Reference) -> str:
    kinds = ", ".join(f"{f.name} ({f.kind}, {f.bin_count} bins)" for f in reference.features)
    return (
        f"reference {reference.reference_id[:12]} of {reference.model}"
        f"{' ' + reference.version if reference.version else ''}: {reference.events:,} events; "
        f"features: {kinds or 'none'}"
    )


@click.group()
def baseline() -> None:
    """Drift references: the known-good distributions drift is measured against."""


@baseline.command()
@config_option
@model_option
@click.option("--version", default=None, help="Only events of this model version.")
@click.option("--bins", type=click.IntRange(2, 200), default=None, help="Default: drift.bins.")
@click.option("--top-k", type=click.IntRange(1, 200), default=None, help="Default: drift.top_k.")
@click.option(
    "--sample-size",
    type=click.IntRange(min=2),
    default=SAMPLE_SIZE,
    show_default=True,
    help="Numbers kept per feature (8 bytes each) to place the quantile edges; with more, "
    "the edges come from a uniform sample and a second pass over the files counts every event.",
)
@output_option
@click.option(
    "--store", "to_store", is_flag=True, help="Also make it the model's reference in Redis."
)
@event_files_argument
def build(
    config_path: Path | None,
    model: str,
    version: str | None,
    bins: int | None,
    top_k: int | None,
    sample_size: int,
    output_path: Path | None,
    to_store: bool,
    events_paths: tuple[Path, ...],
) -> None:
    """Build a reference from JSONL event files, plain, gzip or zstd (events of other models are
    skipped). A pipe (/dev/stdin, <(bzcat ...)) is copied to TMPDIR as it is read, then read as
    a file."""
    from detectors.reference import ReferenceFormatError
    from detectors.reference_builder import ReferenceBuilder, ReferenceCounter
    from driftline.cli import _config
    from driftline.events import InferenceEvent, decode_event
    from driftline.line_files import nonblank_lines, pipes_copied

    config = _config(config_path)
    if output_path is None and not to_store:
        raise click.UsageError("say where the reference goes: --output FILE and/or --store")
    builder = ReferenceBuilder(
        model,
        version=version,
        feature_types=dict(config.model(model).features),
        bins=config.drift.bins if bins is None else bins,
        top_k=config.drift.top_k if top_k is None else top_k,
        max_features=config.drift.max_features,
        confidence_bins=config.monitoring.confidence_bins,
        sample_size=sample_size,
    )

    def batches(files: list[Path]) -> Iterator[tuple[list[InferenceEvent], int]]:
        """The events, 10,000 lines at a time (a file larger than memory is read, not held),
        with how many lines of each batch were not events."""
        for path, file in zip(events_paths, files, strict=True):
            try:
                lines = nonblank_lines(file)
                while chunk := list(islice(lines, 10_000)):
                    decoded = [decode_event(line) for line in chunk]
                    events = [event for event in decoded if isinstance(event, InferenceEvent)]
                    yield events, len(decoded) - len(events)
            except OSError as error:
                raise click.ClickException(f"{path}: cannot read: {error.strerror}") from None

    invalid = 0
    try:
        with pipes_copied(events_paths) as files:
            for events, not_events in batches(files):
                builder.add(events)
                invalid += not_events
            skipped = invalid + builder.refused
            try:
                reference = builder.build(
                    created_at_ms=time.time_ns() // 1_000_000,
                    source=", ".join(path.name for path in events_paths),
                )
            except ReferenceFormatError as error:
                # "no events of m" from a file of invalid lines should say where they went.
                raise click.ClickException(
                    f"{error} ({skipped:,} invalid lines skipped)" if skipped else str(error)
                ) from None
            if builder.sampled:
                # Bins from a sample of the numbers; a second pass counts every event into them.
                counter = ReferenceCounter(reference)
                for events, _ in batches(files):
                    counter.add(events)
                reference = counter.build()
    except OSError as error:  # copying a pipe
        raise unreadable(error, events_paths, "cannot read") from None
    if skipped:
        click.echo(f"skipped {skipped:,} invalid lines", err=True)
    _write(reference, output_path)
    if to_store:
        store, _ = _references(config)
        store.save(reference)
    click.echo(_describe(reference), err=True)


@baseline.command()
@config_option
@model_option
@click.option("--version", required=True, help="The model version whose window becomes normal.")
@click.option("--deployment", default="stable", show_default=True)
@click.option(
    "--window",
    type=click.Choice(["short", "long"]),
    default="long",
    show_default=True,
    help="Which window to freeze (windows.long_seconds is the long one).",
)
@output_option
def freeze(
    config_path: Path | None,
    model: str,
    version: str,
    deployment: str,
    window: str,
    output_path: Path | None,
) -> None:
    """Freeze a live window of a version as the model's new reference (same bins, new counts).

    The window's histograms use the bins of the model's current reference, so a model needs a
    reference (from `baseline build`) before it can be re-frozen from live traffic.
    """
    from detectors.reference import ReferenceFormatError
    from detectors.reference_builder import freeze_window
    from detectors.series import Series
    from detectors.window_summary import SeriesWindow, summarise
    from driftline.cli import _config

    config = _config(config_path)
    store, windows = _references(config)
    current = store.load(model)
    if current is None:
        raise click.ClickException(
            f"model {model!r} has no reference to take bins from; build one first with "
            "`driftline baseline build --store`"
        )
    now_ms = time.time_ns() // 1_000_000
    seconds = config.windows.long_seconds if window == "long" else config.windows.short_seconds
    [fields] = windows.read_windows(model, [seconds * 1000], now_ms)
    series = Series(version, deployment)
    found = summarise(fields).get(series) or SeriesWindow(series)
    try:
        reference = freeze_window(
            current,
            found,
            created_at_ms=now_ms,
            version=version,
            source=f"{window} window ({seconds}s) of {version}/{deployment} at {now_ms}",
        )
    except ReferenceFormatError as error:
        raise click.ClickException(f"{model} {version}/{deployment}: {error}") from None
    store.save(reference)
    _write(reference, output_path)
    click.echo(_describe(reference), err=True)


@baseline.command(name="import")
@config_option
@click.argument("reference_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_reference(config_path: Path | None, reference_path: Path) -> None:
    """Make a reference file its model's reference in Redis."""
    from detectors.reference import Reference, ReferenceFormatError
    from driftline.cli import _config

    config = _config(config_path)
    try:
        reference = Reference.from_json(reference_path.read_bytes())
    except (OSError, ReferenceFormatError) as error:
        raise click.ClickException(f"{reference_path}: {error}") from None
    store, _ = _references(config)
    store.save(reference)
    click.echo(_describe(reference), err=True)


@baseline.command(name="export")
@config_option
@model_option
@output_option
def export_reference(config_path: Path | None, model: str, output_path: Path | None) -> None:
    """Write a model's reference from Redis to a file (or stdout)."""
    from detectors.reference import ReferenceFormatError
    from driftline.cli import _config

    config = _config(config_path)
    store, _ = _references(config)
    try:
        reference = store.load(model)
    except ReferenceFormatError as error:
        raise click.ClickException(
            f"model {model!r}: stored reference is unusable: {error}"
        ) from None
    if reference is None:
        raise click.ClickException(f"model {model!r} has no reference")
    if output_path is None:
        click.echo(reference.to_json())
    else:
        _write(reference, output_path)
        click.echo(_describe(reference), err=True)


@baseline.command(name="delete")
@config_option
@model_option
def delete_reference(config_path: Path | None, model: str) -> None:
    """Remove a model's reference (it is then monitored without drift figures)."""
    from driftline.cli import _config

    config = _config(config_path)
    store, _ = _references(config)
    if not store.delete(model):
        raise click.ClickException(f"model {model!r} has no reference")
    click.echo(f"deleted the reference of {model}", err=True)
