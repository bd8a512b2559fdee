"""``driftline demo``: a canary goes bad and is rolled back, through the real local stack.

The scenario, in order (times from the start of traffic, with the defaults):

1. Name the run (topics, consumer group and Redis key prefix are the run's own, so a demo never
   sees an earlier one), write its config (short windows: 1 s buckets, 20 s and 60 s windows, a
   1 s tick) under ``~/.cache/driftline/demo/<run>/``, create the topics, and save each model's
   drift reference, built from synthetic stable traffic.
2. Start the processes a deployment runs: ``driftline consume``, ``consume-labels``,
   ``evaluate`` (``/metrics`` on ``evaluator.metrics_port``, which the local Prometheus scrapes)
   and, when its port is free, ``webhook`` (where the local Alertmanager sends rollback alerts).
3. Publish live traffic with ground truth for two models, each with a stable and a canary
   version; labels follow their predictions two seconds later.
4. At 20 s freeze each model's quality reference (``driftline calibrate``); at 30 s inject drift
   (two features shifted), a latency rise (x4) and a precision drop into ``fraud``'s canary.
5. The rules move through pending and firing; ``canary-p99-latency-vs-stable`` has
   ``action: rollback``: the evaluator rolls the canary back (``dry_run: false``): the Redis key
   services read is set to the stable version and a command goes to the control topic. The
   traffic obeys the key, as a service would, and the canary's traffic stops.
6. Ten seconds later stop everything and print a summary: the alerts' transitions, the rollback
   from the audit stream, and where to look.

The live view redraws from the evaluator's own ``/metrics``; without a terminal (CI, a pipe) it
prints one line per change instead. It exits non-zero when no rollback happened in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from consumers.kafka_queries import create_topics
from driftline.config import Config, parse_config
from driftline.live_traffic import LiveStream, LiveTraffic
from driftline.synthetic import TrafficSpec, synthetic_events

__all__ = [
    "DEMO_STREAMS",
    "DemoProcess",
    "demo_settings",
    "ensure_topics",
    "run_demo",
    "run_processes",
    "save_references",
    "scrape",
]

FEATURES = 5
SEGMENTS = (("region", ("eu", "us")),)
DEMO_STREAMS = (
    # (model, version, deployment, latency median ms)
    ("fraud", "v41", "stable", 20.0),
    ("fraud", "v42", "canary", 20.0),
    ("churn", "v7", "stable", 45.0),
    ("churn", "v8", "canary", 45.0),
)
BAD_MODEL, BAD_VERSION = "fraud", "v42"
ROLLBACK_RULE = "canary-p99-latency-vs-stable"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _spec(model: str, version: str, deployment: str, latency_ms: float) -> TrafficSpec:
    return TrafficSpec(
        model,
        version,
        deployment,
        feature_count=FEATURES,
        latency_median_ms=latency_ms,
        segments=SEGMENTS,
    )


def demo_settings(base: Config, run_id: str, *, for_seconds: float = 10.0) -> dict[str, Any]:
    """The demo's config: ``base`` (addresses, credentials, ports) with the scenario's sections.

    Topics, group and key prefix carry ``run_id``. ``for_seconds`` is the rules' ``for``.
    """
    data = base.model_dump(mode="json", by_alias=True)
    prefix = f"demo-{run_id}"
    data["kafka"]["group_id"] = f"driftline-{prefix}"
    data["redis"]["key_prefix"] = prefix
    data["topics"] = {
        "events": f"driftline.{prefix}.events",
        "labels": f"driftline.{prefix}.labels",
        "dead_letter": f"driftline.{prefix}.dead-letter",
        "control": f"driftline.{prefix}.control",
    }
    data["windows"] = {
        "bucket_seconds": 1,
        "rollup_seconds": 2,
        "short_seconds": 20,
        "long_seconds": 60,
    }
    data["consumer"]["poll_timeout_seconds"] = 0.2
    data["evaluator"]["tick_seconds"] = 1.0
    data["evaluator"]["lease_ttl_seconds"] = 5.0
    labels = {"kind": "classification", "positive_classes": ["positive"], "horizon_seconds": 600}
    data["models"] = {
        model: {"stable_version": version, "segments": ["region"], "labels": labels}
        for model, version, deployment, _ in DEMO_STREAMS
        if deployment == "stable"
    }
    data["drift"] = {**data["drift"], "minimum_samples": 200, "reference_refresh_seconds": 1.0}
    data["quality"] = {
        **data["quality"],
        "minimum_labelled": 30,
        "comparison_minimum_events": 100,
        "reference_refresh_seconds": 1.0,
    }
    data["rules"] = [
        {
            "name": ROLLBACK_RULE,
            "metric": "driftline_latency_seconds",
            "match": {"quantile": "0.99", "deployment": "canary", "segment": ""},
            "relative": {"reference": {"deployment": "stable"}, "mode": "ratio"},
            "comparison": ">",
            "threshold": 1.5,
            "for": for_seconds,
            "windows": "short",
            "min_samples": 100,
            "severity": "page",
            "action": "rollback",
            "summary": "{model} canary {version}: p99 latency {value:.2f}x the stable version's",
        },
        {
            "name": "canary-drift-share",
            "metric": "driftline_drift_share_ratio",
            "match": {"deployment": "canary", "segment": ""},
            "comparison": ">",
            "threshold": 0.25,
            "for": for_seconds / 2,
            "windows": "short",
            "min_samples": 200,
            "severity": "ticket",
            "summary": "{model} canary {version}: {value:.2f} of its features drifted",
            "runbook_url": "docs/runbooks/drift-share.md",
        },
        {
            "name": "canary-precision-loss",
            "metric": "driftline_canary_difference",
            "match": {"deployment": "canary", "figure": "precision", "class": "positive"},
            "comparison": "<",
            "threshold": -0.1,
            "for": for_seconds / 2,
            "windows": "short",
            "min_samples": 0,
            "severity": "page",
            "summary": "{model} canary {version}: precision {value:.2f} against stable",
            "runbook_url": "docs/runbooks/README.md",
        },
    ]
    notifiers: list[dict[str, Any]] = [{"type": "log"}]
    alertmanager = os.environ.get("DRIFTLINE_ALERTMANAGER_URL")
    if alertmanager:
        notifiers.append({"type": "alertmanager", "url": alertmanager, "resend_seconds": 5})
    data["alerting"] = {
        **data["alerting"],
        "notifiers": notifiers,
        "rollback": {
            "dry_run": False,
            "cooldown_seconds": 60,
            "max_per_day": 10,
            "retries": 1,
            "backoff_seconds": 0.2,
            "actions": [
                {"type": "redis_key", "key": f"{prefix}:active-version:{{model}}"},
                {"type": "kafka_control"},
            ],
        },
    }
    return data


def ensure_topics(config: Config) -> None:
    admin = AdminClient(
        {"bootstrap.servers": config.kafka.bootstrap_servers, **config.kafka.client}
    )
    existing = admin.list_topics(timeout=30).topics
    wanted = [
        NewTopic(name, partitions, 1)
        for name, partitions in (
            (config.topics.events, 4),
            (config.topics.labels, 4),
            (config.topics.dead_letter, 1),
            (config.topics.control, 1),
        )
        if name not in existing
    ]
    create_topics(admin, wanted)


def save_references(config: Config, store: Any) -> list[str]:
    """Each model's drift reference, from 5,000 synthetic events of its stable version."""
    from detectors.reference_builder import ReferenceBuilder
    from detectors.stores.redis_reference_store import RedisReferenceStore
    from driftline.events import InferenceEvent, decode_event

    references = RedisReferenceStore(store.client, store.keys)
    saved = []
    for seed, (model, version, deployment, latency_ms) in enumerate(DEMO_STREAMS):
        if deployment != "stable":
            continue
        builder = ReferenceBuilder(
            model,
            bins=config.drift.bins,
            top_k=config.drift.top_k,
            max_features=config.drift.max_features,
            confidence_bins=config.monitoring.confidence_bins,
        )
        spec = _spec(model, version, deployment, latency_ms)
        decoded = [
            decode_event(raw)
            for raw, _ in synthetic_events(spec, 5000, start_ms=0, rate_per_s=100, seed=1000 + seed)
        ]
        builder.add(event for event in decoded if isinstance(event, InferenceEvent))
        reference = builder.build(
            created_at_ms=time.time_ns() // 1_000_000,
            source=f"demo: 5,000 synthetic events of {model} {version}",
        )
        references.save(reference)
        saved.append(reference.reference_id)
    return saved


def scrape(url: str) -> Samples:
    """``/metrics`` as metric name -> [(labels, value)]; empty when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


@dataclass
class DemoProcess:
    """A ``driftline`` process the demo started; its output goes to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


def _start(name: str, arguments: list[str], run_dir: Path, env: Mapping[str, str]) -> DemoProcess:
    log_path = run_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *arguments],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
    return DemoProcess(name, process, log_path)


@contextlib.contextmanager
def run_processes(config: Config, config_path: Path, run_dir: Path) -> Iterator[list[DemoProcess]]:
    """Run ``consume``, ``consume-labels``, ``evaluate`` and (its port free) ``webhook`` on
    ``config_path`` for the duration of the block; on exit, SIGTERM each and wait for it."""
    env = {
        **os.environ,
        "DRIFTLINE_WEBHOOK_TOKEN": os.environ.get("DRIFTLINE_WEBHOOK_TOKEN", "dev-token"),
    }
    with_config = ["--config", str(config_path)]
    started = [
        _start("consume", ["consume", *with_config], run_dir, env),
        _start("consume-labels", ["consume-labels", *with_config], run_dir, env),
        _start("evaluate", ["evaluate", *with_config], run_dir, env),
    ]
    webhook = config.alerting.webhook
    if port_free(webhook.host, webhook.port):
        started.append(_start("webhook", ["webhook", *with_config], run_dir, env))
    try:
        yield started
    finally:
        for running in started:
            if running.process.poll() is None:
                running.process.send_signal(signal.SIGTERM)
        for running in started:
            try:
                running.process.wait(30)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait(10)


@dataclass
class _Watch:
    """What the live view has seen so far."""

    started: float
    metrics: Samples = field(default_factory=dict)
    states: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, text: str, console: Console, live: bool) -> None:
        line = f"t+{self.elapsed():5.1f}s  {text}"
        self.timeline.append(line)
        if not live:
            console.print(line, highlight=False)

    def update(self, metrics: Samples, console: Console, live: bool) -> None:
        if not metrics:
            return
        self.metrics = metrics
        for labels, value in metrics.get("driftline_alert_state", []):
            if value != 1:
                continue
            key = (labels["rule"], labels["model"], labels["version"], labels["segment"])
            state = labels["state"]
            if self.states.get(key, "inactive") != state:
                where = f"{key[1]} {key[2]}" + (f" [{key[3]}]" if key[3] else "")
                self.note(f"alert {key[0]} on {where}: {state}", console, live)
            self.states[key] = state


def _value(metrics: Samples, name: str, **labels: str) -> float | None:
    for found, value in metrics.get(name, []):
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return value
    return None


def _view(watch: _Watch, traffic: LiveTraffic, phase: str) -> Group:
    metrics = watch.metrics
    windows = Table(title=f"driftline demo  t+{watch.elapsed():4.0f}s  {phase}", expand=False)
    for column in (
        "model",
        "version",
        "deployment",
        "events/s",
        "p99 ms",
        "errors",
        "drift share",
        "precision",
        "labelled",
    ):
        windows.add_column(column, justify="left" if column[0] in "mvd" else "right")
    for model, version, deployment, _ in DEMO_STREAMS:
        series = {"model": model, "version": version, "deployment": deployment, "segment": ""}
        short = {**series, "window": "short"}
        throughput = _value(metrics, "driftline_throughput_events_per_second", **short)
        p99 = _value(metrics, "driftline_latency_seconds", quantile="0.99", **short)
        errors = _value(metrics, "driftline_error_ratio", **short)
        share = _value(metrics, "driftline_drift_share_ratio", **series)
        precision = _value(metrics, "driftline_precision_ratio", **short)
        coverage = _value(metrics, "driftline_label_coverage_ratio", **short)
        windows.add_row(
            model,
            version,
            deployment,
            _fmt(throughput, "{:.0f}"),
            _fmt(None if p99 is None else p99 * 1000, "{:.1f}"),
            _fmt(errors, "{:.3f}"),
            _fmt(share, "{:.2f}", bad=share is not None and share > 0.25),
            _fmt(precision, "{:.3f}", bad=precision is not None and precision < 0.85),
            _fmt(coverage, "{:.2f}"),
        )
    alerts = Table(title="alerts (built-in engine)")
    for column in ("rule", "model", "version", "segment", "state"):
        alerts.add_column(column)
    colours = {"pending": "yellow", "firing": "bold red", "resolved": "green", "nodata": "dim"}
    for (rule, model, version, segment), state in sorted(watch.states.items()):
        if state == "inactive":
            continue
        alerts.add_row(rule, model, version, segment, f"[{colours.get(state, '')}]{state}[/]")
    rolled = ", ".join(f"{m} -> {v}" for m, v in traffic.rolled_back.items()) or "none yet"
    footer = Table.grid()
    footer.add_row(
        f"published {traffic.events_sent:,} events, {traffic.labels_sent:,} labels; "
        f"rolled back: {rolled}"
    )
    for line in watch.timeline[-8:]:
        footer.add_row(line)
    return Group(windows, alerts, footer)


def _fmt(value: float | None, pattern: str, *, bad: bool = False) -> str:
    if value is None:
        return "-"
    text = pattern.format(value)
    return f"[bold red]{text}[/]" if bad else text


def _executed(ledger: Any) -> list[dict[str, str]]:
    return [entry for entry in ledger.audit_entries(200) if entry.get("decision") == "executed"]


def run_demo(
    base: Config,
    *,
    seconds: float,
    rate_per_s: float,
    run_dir: Path | None = None,
    console: Console | None = None,
    traffic_only: bool = False,
    config_path: Path | None = None,
    metrics_url: str | None = None,
) -> bool:
    """Run the scenario within ``seconds``; True when the canary was rolled back.

    ``traffic_only``: the processes already run (docker compose, Kubernetes) on ``base``, which
    is then used as it is (``config_path`` is its file, for ``driftline calibrate``), and
    ``metrics_url`` is where their evaluator serves ``/metrics``.
    """
    from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger
    from driftline.alerting_config import RedisKeyActionConfig
    from driftline.cli import open_store

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log, not a screen: no wrapping at 80 columns
            console = Console(width=150, soft_wrap=True)
    live = console.is_terminal
    run_id = uuid.uuid4().hex[:6]
    run_dir = run_dir or Path.home() / ".cache" / "driftline" / "demo" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if traffic_only:
        if config_path is None:
            raise click.ClickException("--traffic-only needs the deployment's --config")
        config = base
    else:
        settings = demo_settings(base, run_id)
        config = parse_config(settings, source="demo config")
        config_path = run_dir / "driftline.yaml"
        config_path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    store = open_store(config)
    ensure_topics(config)
    references = save_references(config, store)
    ledger = RedisRollbackLedger(store.client, AlertingKeys(config.redis.key_prefix))
    action_key = next(
        (
            action.key
            for action in config.alerting.rollback.actions
            if isinstance(action, RedisKeyActionConfig)
        ),
        None,
    )

    def active_version(model: str) -> str | None:
        value = None if action_key is None else store.client.get(action_key.format(model=model))
        return None if value is None else str(value)

    streams = {
        (model, version): LiveStream(_spec(model, version, deployment, latency), rate_per_s)
        for model, version, deployment, latency in DEMO_STREAMS
    }
    traffic = LiveTraffic(
        config, list(streams.values()), run_id=run_id, active_version=active_version
    )
    metrics_url = metrics_url or (
        f"http://{config.evaluator.metrics_host}:{config.evaluator.metrics_port}/metrics"
    )
    console.print(
        f"[bold]driftline demo[/] run {run_id}: config and logs in {run_dir}\n"
        f"two models (fraud, churn), each a stable and a canary version, {rate_per_s:g} events/s "
        f"each; drift references saved ({len(references)})",
        highlight=False,
    )
    if not traffic_only and not port_free(
        config.evaluator.metrics_host, config.evaluator.metrics_port
    ):
        raise click.ClickException(
            f"port {config.evaluator.metrics_port} is in use: stop what serves it (another "
            "`driftline evaluate`?) or set evaluator.metrics_port in --config"
        )
    calibrate_at, inject_at, after_rollback_s = 20.0, 30.0, 10.0
    watch = _Watch(started=time.monotonic())
    phase = "healthy traffic"
    calibrating: list[subprocess.Popen[bytes]] = []
    calibrated = injected = False
    rolled_back_at: float | None = None
    running: contextlib.AbstractContextManager[list[DemoProcess]] = (
        contextlib.nullcontext([]) if traffic_only else run_processes(config, config_path, run_dir)
    )
    with running as processes:
        names = ", ".join(p.name for p in processes) or "nothing (the deployment's processes)"
        traffic.start()
        watch.started = time.monotonic()
        watch.note(f"started {names}; publishing healthy traffic", console, live)
        display = Live(console=console, refresh_per_second=4, transient=False) if live else None
        try:
            if display is not None:
                display.start()
            last_print = 0.0
            while watch.elapsed() < seconds:
                for started in processes:
                    if started.process.poll() is not None:
                        raise click.ClickException(
                            f"`driftline {started.name}` exited: see {started.log_path}"
                        )
                watch.update(scrape(metrics_url), console, live)
                elapsed = watch.elapsed()
                if not calibrating and elapsed >= calibrate_at:
                    calibrating = _calibrate(config_path, run_dir)
                if (
                    calibrating
                    and not calibrated
                    and all(p.poll() is not None for p in calibrating)
                ):
                    calibrated = True
                    watch.note(
                        "froze each model's quality reference (driftline calibrate)", console, live
                    )
                if not injected and elapsed >= inject_at:
                    injected = True
                    canary = streams[(BAD_MODEL, BAD_VERSION)]
                    canary.change(latency_median_ms=80.0, feature_shift=1.5, shifted_features=2)
                    canary.label_accuracy = 0.6
                    phase = f"{BAD_MODEL} {BAD_VERSION} degraded"
                    watch.note(
                        f"injected into {BAD_MODEL} {BAD_VERSION} (canary): drift on f0 and f1 "
                        "(+1.5 sd), latency x4, precision 0.95 -> 0.6",
                        console,
                        live,
                    )
                if rolled_back_at is None and _executed(ledger):
                    rolled_back_at = elapsed
                    phase = "rolled back"
                    [entry, *_] = _executed(ledger)
                    watch.note(
                        f"ROLLBACK executed: {entry['model']} {entry['from_version']} -> "
                        f"{entry['to_version']} (rule {entry['rule']})",
                        console,
                        live,
                    )
                if BAD_MODEL in traffic.rolled_back and "obeyed" not in phase:
                    phase = "rolled back; traffic obeyed"
                    watch.note(
                        f"traffic obeys: {BAD_MODEL} serves {traffic.rolled_back[BAD_MODEL]} only",
                        console,
                        live,
                    )
                if rolled_back_at is not None and elapsed >= rolled_back_at + after_rollback_s:
                    break
                if display is not None:
                    display.update(_view(watch, traffic, phase))
                elif elapsed - last_print >= 10:
                    last_print = elapsed
                    console.print(_view(watch, traffic, phase))
                time.sleep(1.0)
        finally:
            traffic.stop()
            if display is not None:
                display.update(_view(watch, traffic, phase))
                display.stop()
    return _summary(console, config, run_dir, config_path, watch, traffic, ledger, metrics_url)


def _short(number: str | None) -> str:
    try:
        return f"{float(number or 'nan'):.3g}"
    except ValueError:
        return str(number)


def _calibrate(config_path: Path, run_dir: Path) -> list[subprocess.Popen[bytes]]:
    """``driftline calibrate`` of each model, in the background (the view keeps moving)."""
    started = []
    for model, _, deployment, _ in DEMO_STREAMS:
        if deployment != "stable":
            continue
        with (run_dir / f"calibrate-{model}.log").open("wb") as log_file:
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "driftline.cli",
                        "calibrate",
                        "--config",
                        str(config_path),
                        "--model",
                        model,
                        "--window",
                        "short",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
    return started


def _summary(
    console: Console,
    config: Config,
    run_dir: Path,
    config_path: Path,
    watch: _Watch,
    traffic: LiveTraffic,
    ledger: Any,
    metrics_url: str,
) -> bool:
    executed = _executed(ledger)
    console.rule("summary")
    console.print(
        f"ran {watch.elapsed():.0f}s: published {traffic.events_sent:,} events and "
        f"{traffic.labels_sent:,} labels",
        highlight=False,
    )
    for line in watch.timeline:
        console.print("  " + line, highlight=False)
    audit_key = f"{config.redis.key_prefix}:{{alerting}}:audit"
    from driftline.alerting_config import RedisKeyActionConfig

    action_keys = [
        action.key.format(model=BAD_MODEL)
        for action in config.alerting.rollback.actions
        if isinstance(action, RedisKeyActionConfig)
    ]
    active_key = action_keys[0] if action_keys else "(no redis_key action configured)"
    for entry in executed:
        actions = json.loads(entry.get("actions", "[]"))
        done = ", ".join(
            f"{action.get('action', '?')}: {'ok' if action.get('ok') else 'FAILED'}"
            for action in actions
        )
        console.print(
            f"[bold]ROLLBACK executed[/]: {entry['model']} {entry['from_version']} -> "
            f"{entry['to_version']} by rule {entry['rule']} (value {_short(entry.get('value'))}, "
            f"threshold {_short(entry.get('threshold'))}); actions: {done}",
            highlight=False,
        )
    if not executed:
        console.print("[bold red]no rollback was executed[/]: see the logs in " + str(run_dir))
    prometheus = os.environ.get("DRIFTLINE_PROMETHEUS_URL", "http://127.0.0.1:19090")
    alertmanager = os.environ.get("DRIFTLINE_ALERTMANAGER_URL", "http://127.0.0.1:19094")
    redis_url = config.redis.url
    console.print(
        "\nwhere to look:\n"
        f"  metrics      {metrics_url} (served while the evaluator runs)\n"
        f"  Prometheus   {prometheus}/graph?g0.expr=driftline_alert_state%7Bstate%3D%22firing"
        "%22%7D&g0.range_input=15m  and driftline_rollback_decisions_total\n"
        f"  Alertmanager {alertmanager}/#/alerts\n"
        f"  audit stream XRANGE {audit_key} - +   (on {redis_url})\n"
        f"  rollback key GET {active_key};  control topic {config.topics.control}\n"
        f"  status       driftline status --config {config_path}\n"
        f"  logs         {run_dir}\n"
        "  dashboards   docker compose -f deploy/compose/docker-compose.yml up (Grafana on :3000)",
        highlight=False,
    )
    return bool(executed)
