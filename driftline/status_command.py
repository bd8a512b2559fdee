"""``driftline status``: one table of every model, read from Redis and Kafka (no evaluator needed).

Per model version (all of its traffic, no segment), from the Redis windows: events in the window,
events per second, p99 latency and error ratio, computed by the evaluator's own code (one tick
without drift, quality or rules, published nowhere). Per model: freshness, the alerts the rule
engine last saved in Redis (pending, firing, resolved, nodata; inactive ones are not saved), and
the newest rollback decision of the audit stream. For the deployment: the consumer lag of the
events and labels consumer groups, from Kafka, and which evaluator holds the lease.

``--json`` prints the same as one JSON document for scripts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["collect_status", "status"]

AUDIT_SCAN = 1000
"""Newest audit entries searched for each model's last rollback decision."""


ACTED = ("executed", "failed", "dry_run")


def _mapping(value: object) -> dict[object, object]:
    return dict(value) if isinstance(value, dict) else {}


def _lag(config: Any, group: str, topic: str) -> dict[str, Any]:
    from alerting.consumer_lag import ConsumerLagReader

    reader = ConsumerLagReader(
        config.kafka.bootstrap_servers, group, [topic], **config.kafka.client
    )
    try:
        lags = reader.read()
    finally:
        reader.close()
    return {
        "group": group,
        "topic": topic,
        "messages": sum(lags.values()) if lags else None,
        "partitions": {str(partition): lag for (_, partition), lag in sorted(lags.items())},
    }


def _rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def collect_status(config: Any, store: Any) -> dict[str, Any]:
    """The status document (what ``--json`` prints)."""
    from alerting import metric_names as names
    from alerting.alerting_step import EngineStateStore
    from alerting.evaluator import Evaluator
    from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
    from alerting.snapshot import SnapshotCollector
    from consumers.label_consumer import labels_group

    evaluator = Evaluator(config, store, SnapshotCollector(), leave_out_failures=True)
    snapshot = evaluator.tick()
    window = "short"
    models: dict[str, dict[str, Any]] = {}
    versions: dict[tuple[str, str, str], dict[str, Any]] = {}
    for sample in snapshot.samples:
        labels = dict(zip(sample.metric.labels, sample.labels, strict=True))
        if sample.metric == names.FRESHNESS:
            models.setdefault(labels["model"], {})["freshness_seconds"] = _rounded(sample.value, 3)
            continue
        if labels.get("window") != window or labels.get("segment") != "":
            continue
        key = (labels["model"], labels["version"], labels["deployment"])
        figures = versions.setdefault(key, {})
        if sample.metric == names.WINDOW_EVENTS:
            figures["window_events"] = int(sample.value)
        elif sample.metric == names.THROUGHPUT:
            figures["events_per_second"] = _rounded(sample.value, 3)
        elif sample.metric == names.ERROR_RATIO:
            figures["error_ratio"] = _rounded(sample.value)
        elif sample.metric == names.LATENCY and labels["quantile"] == "0.99":
            figures["p99_latency_seconds"] = _rounded(sample.value)
    keys = AlertingKeys(config.redis.key_prefix)
    alerts = EngineStateStore(store.client, keys.engine_state()).load()
    ledger = RedisRollbackLedger(store.client, keys)
    last_rollback: dict[str, dict[str, str]] = {}
    for entry in ledger.audit_entries(AUDIT_SCAN):  # oldest first: the newest wins
        model = entry.get("model", "")
        acted = entry.get("decision") in ACTED
        # A rollback done (or rehearsed) outranks the declined duplicates reported after it.
        if acted or last_rollback.get(model, {}).get("decision") not in ACTED:
            last_rollback[model] = entry
    lease = store.client.get(keys.evaluator_lease())
    document_models = []
    for model in sorted(set(models) | {key[0] for key in versions}):
        model_alerts = []
        for record in alerts:
            labels = {str(k): str(v) for k, v in _mapping(record.get("labels")).items()}
            if labels.pop("model", None) == model:
                model_alerts.append(
                    {"rule": str(record["rule"]), "state": str(record["state"]), **labels}
                )
        rollback = last_rollback.get(model)
        document_models.append(
            {
                "model": model,
                "freshness_seconds": models.get(model, {}).get("freshness_seconds"),
                "versions": [
                    {"version": version, "deployment": deployment, **figures}
                    for (name, version, deployment), figures in sorted(versions.items())
                    if name == model
                ],
                "alerts": sorted(model_alerts, key=lambda a: (a["rule"], a.get("version", ""))),
                "last_rollback": None
                if rollback is None
                else {
                    name: rollback.get(name)
                    for name in (
                        "decision",
                        "from_version",
                        "to_version",
                        "rule",
                        "at_ms",
                        "dry_run",
                        "reason",
                    )
                },
            }
        )
    return {
        "at_ms": snapshot.taken_at_ms,
        "window": window,
        "window_seconds": config.windows.short_seconds,
        "models": document_models,
        "consumer_lag": {
            "events": _lag(config, config.kafka.group_id, config.topics.events),
            "labels": _lag(config, labels_group(config), config.topics.labels),
        },
        "evaluator_lease_holder": None if lease is None else str(lease),
        # Models (model:<name>) or parts whose stored state could not be read: the log says why.
        "unreadable": sorted(evaluator.errors),
    }


def _age(at_ms: str | None, now_ms: int) -> str:
    if not at_ms:
        return ""
    seconds = max(0.0, (now_ms - float(at_ms)) / 1000)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _table(document: dict[str, Any]) -> Any:
    from rich.table import Table

    lag = document["consumer_lag"]
    caption = (
        f"consumer lag: events {_text(lag['events']['messages'])} ({lag['events']['group']}), "
        f"labels {_text(lag['labels']['messages'])} ({lag['labels']['group']}); "
        f"evaluator lease: {document['evaluator_lease_holder'] or 'not held'}"
    )
    table = Table(
        title=f"driftline status ({document['window']} window, {document['window_seconds']}s)",
        caption=caption,
    )
    for column in (
        "model",
        "version",
        "deployment",
        "events/s",
        "p99 ms",
        "errors",
        "freshness",
        "alerts",
        "last rollback",
    ):
        table.add_column(
            column,
            justify="right" if column in ("events/s", "p99 ms", "errors", "freshness") else "left",
        )
    colours = {"pending": "yellow", "firing": "bold red", "nodata": "dim", "resolved": "green"}
    for model in document["models"]:
        rollback = model["last_rollback"]
        rollback_text = (
            ""
            if rollback is None
            else (
                f"{rollback['decision']} {rollback['from_version']} -> {rollback['to_version']} "
                f"{_age(rollback['at_ms'], document['at_ms'])}"
            )
        )
        rows = model["versions"] or [{"version": "", "deployment": ""}]
        for index, figures in enumerate(rows):
            alerts = ", ".join(
                f"{a['rule']}: [{colours.get(a['state'], '')}]{a['state']}[/]"
                for a in model["alerts"]
                if a.get("version", "") == figures["version"]
                or (index == 0 and not a.get("version"))
            )
            p99 = figures.get("p99_latency_seconds")
            freshness = model["freshness_seconds"]
            table.add_row(
                model["model"] if index == 0 else "",
                figures["version"],
                figures["deployment"],
                _text(figures.get("events_per_second")),
                "-" if p99 is None else f"{p99 * 1000:.1f}",
                _text(figures.get("error_ratio")),
                ("-" if freshness is None else f"{freshness:.1f}s") if index == 0 else "",
                alerts,
                rollback_text if index == 0 else "",
            )
    return table


def _text(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML config file (defaults apply when omitted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Models, versions, traffic, freshness, lag, alerts and the last rollback, from Redis and
    Kafka."""
    from rich.console import Console

    from driftline.cli import _config, open_store

    config = _config(config_path, kafka_clients=True)
    started = time.monotonic()
    document = collect_status(config, open_store(config))
    if as_json:
        click.echo(json.dumps(document, sort_keys=True))
        return
    console = Console()
    if not console.is_terminal:  # piped or logged: no wrapping at 80 columns
        console = Console(width=200)
    console.print(_table(document))
    if document["unreadable"]:
        console.print(f"unreadable (see the log): {', '.join(document['unreadable'])}", style="red")
    console.print(f"(read in {time.monotonic() - started:.1f}s)", style="dim")
