"""The label and quality verbs of the ``driftline`` command: ``consume-labels``, ``calibrate``.

Registered on the main group by ``driftline.cli``; that module's helpers are imported inside the
commands, as ``python -m driftline.cli`` runs it as ``__main__``.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path

import click

from driftline.cli_options import config_option, exit_when_idle_option, runtime_option

__all__ = ["calibrate", "consume_labels"]

log = logging.getLogger("driftline")


@click.command("consume-labels")
@config_option
@runtime_option
@exit_when_idle_option
def consume_labels(config_path: Path | None, runtime: str, exit_when_idle: float | None) -> None:
    """Consume the labels topic into the quality windows (exactly once).

    Runs in the consumer group <kafka.group_id>-labels, beside `driftline consume`.
    """
    from consumers.exceptions import StorePositionsPastTheEnd
    from consumers.label_consumer import LabelConsumer, labels_group
    from driftline.cli import _config, _stop_on_signals, open_store
    from driftline.config import ConfigError

    config = _config(config_path, kafka_clients=True)
    store = open_store(config)
    if runtime == "faust":
        from consumers.faust_app import CompressionUnsupported, FaustEventConsumer

        try:
            consumer: LabelConsumer | FaustEventConsumer = FaustEventConsumer(
                config, store, labels=True
            )
        except (ConfigError, CompressionUnsupported) as error:
            raise click.ClickException(str(error)) from None
    else:
        consumer = LabelConsumer(config, store)
    _stop_on_signals(consumer.stop)
    started = time.monotonic()
    log.info("consuming %s as group %s", config.topics.labels, labels_group(config))
    try:
        consumer.run(max_idle_s=exit_when_idle)
    except StorePositionsPastTheEnd as error:  # nothing is committed
        raise click.ClickException(str(error)) from None
    log.info(
        "stopped after %d batches, %d labels applied in %.1fs",
        consumer.batches,
        consumer.events_applied,
        time.monotonic() - started,
    )


def _parse_time_ms(text: str | None) -> int:
    if text is None:
        return time.time_ns() // 1_000_000
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither epoch milliseconds nor an ISO 8601 time", param_hint="--at"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


@click.command()
@config_option
@click.option("--model", required=True, help="The model whose quality reference is frozen.")
@click.option("--version", default=None, help="Only this stable version (default: all stable).")
@click.option(
    "--window",
    type=click.Choice(["short", "long"]),
    default="long",
    show_default=True,
    help="Which window (windows.short_seconds / long_seconds) to freeze.",
)
@click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help="End of the window: epoch ms or ISO 8601 (default: now).",
)
@click.option("--dry-run", is_flag=True, help="Print the reference without saving it.")
def calibrate(
    config_path: Path | None,
    model: str,
    version: str | None,
    window: str,
    at: str | None,
    dry_run: bool,
) -> None:
    """Freeze a model's quality reference (confidence calibration, segment shares) from a window.

    The window's stable traffic and its labels become what the label-free accuracy estimate is
    calibrated on and what segment shares are compared with.
    """
    from detectors.quality_reference import QualityReferenceError, freeze_quality_reference
    from detectors.window_summary import summarise
    from driftline.cli import _config, open_store

    config = _config(config_path)
    if config.model(model).labels is None:
        raise click.ClickException(f"models.{model}.labels: not configured; nothing to calibrate")
    end_ms = _parse_time_ms(at)
    seconds = config.windows.long_seconds if window == "long" else config.windows.short_seconds
    store = open_store(config)
    [fields] = store.read_windows(model, [seconds * 1000], end_ms)
    try:
        reference = freeze_quality_reference(
            model,
            summarise(fields),
            version,
            created_at_ms=time.time_ns() // 1_000_000,
            bins=config.monitoring.confidence_bins,
            source=f"{window} window ending {end_ms}",
        )
    except QualityReferenceError as error:
        raise click.ClickException(str(error)) from None
    labelled = sum(reference.labelled)
    if reference.calibration() is None:
        log.warning("only %d labelled predictions: too few for the label-free estimate", labelled)
    if not dry_run:
        store.save_quality_reference(model, reference.to_json())
    click.echo(
        json.dumps(
            {
                "model": model,
                "labelled": labelled,
                "correct": sum(reference.correct),
                "segments": len(reference.segment_shares),
                "saved": not dry_run,
            }
        )
    )
