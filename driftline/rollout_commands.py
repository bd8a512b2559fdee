"""``driftline verdict`` (one verdict on the command line) and ``driftline gate`` (the HTTP gate
Argo Rollouts and Flagger ask); see docs/rollout-gate.md."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import click

from driftline.cli_options import config_option
from driftline.config import Config, ConfigError

__all__ = ["EXIT_CODES", "build_gate", "gate", "verdict"]

log = logging.getLogger("driftline")

EXIT_CODES = {"promote": 0, "hold": 3, "rollback": 4}
"""``driftline verdict`` exits with these, so a pipeline can branch on the verdict (1 and 2 are
click's errors and usage errors)."""


def build_gate(config: Config, store: Any) -> Any:
    """The gate on the Redis ``store``: drift and quality references, the rule engine's saved
    alert states and shadow agreement, all from the same Redis."""
    from alerting.alerting_step import EngineStateStore
    from alerting.quality_figures import QualityReferences
    from alerting.rollback_ledger import AlertingKeys
    from alerting.rollout_gate import RolloutGate
    from alerting.shadow_agreement import ShadowAgreement
    from driftline.cli import reference_cache

    references = reference_cache(config, store)
    quality = QualityReferences(store, config.quality.reference_refresh_seconds)
    states = EngineStateStore(store.client, AlertingKeys(config.redis.key_prefix).engine_state())
    return RolloutGate(
        config,
        store,
        drift_references=references.reference,
        quality_references=quality.reference,
        alert_states=states.load,
        agreement=ShadowAgreement(config, store).agreement,
    )


def _gate(config_path: Path | None) -> tuple[Config, Any]:
    from driftline.cli import _config, open_store

    config = _config(config_path)
    store = open_store(config)
    try:
        return config, build_gate(config, store)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@config_option
@click.option("--baseline", default=None, help="Compare with this version (default: stable).")
@click.option("--step", default=None, help="The rollout step (rollout.models.<m>.steps).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict JSON of /v1/verdict.")
@click.argument("model")
@click.argument("candidate")
def verdict(
    config_path: Path | None,
    baseline: str | None,
    step: str | None,
    as_json: bool,
    model: str,
    candidate: str,
) -> None:
    """Judge CANDIDATE (a version of MODEL) now: promote, hold or rollback, with the reasons.

    Exit status: 0 promote, 3 hold, 4 rollback (1: error).
    """
    from alerting.rollout_gate import VerdictRequestError

    _, rollout_gate = _gate(config_path)
    try:
        answer = rollout_gate.verdict(model, candidate, baseline, step)
    except VerdictRequestError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(answer.to_dict(), allow_nan=False))
    else:
        click.echo(answer.summary())
    raise SystemExit(EXIT_CODES[answer.verdict])


@click.command()
@config_option
@click.option("--host", default=None, help="Override rollout.host.")
@click.option("--port", type=click.IntRange(0, 65_535), default=None, help="Override rollout.port.")
@click.option(
    "--dev",
    is_flag=True,
    help="Development setup: start even without a secret (then accept any request).",
)
def gate(config_path: Path | None, host: str | None, port: int | None, dev: bool) -> None:
    """Serve the rollout gate: GET /v1/verdict (Argo Rollouts) and POST /v1/flagger/<hook>."""
    from alerting.rollout_gate_server import VERDICT_PATH, serve_gate
    from alerting.webhook_receiver import load_secrets
    from driftline.cli import _stop_on_signals, listening

    config, rollout_gate = _gate(config_path)
    try:
        token, secret = load_secrets(config.alerting.webhook)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if token is None and secret is None:
        if not dev:
            raise click.ClickException(
                "the gate needs a secret: set the environment variable named by "
                "alerting.webhook.token_env (or token_file, hmac_secret_env, hmac_secret_file), "
                "or run with --dev on a development machine"
            )
        log.warning("gate: --dev and no secret: accepting UNAUTHENTICATED requests")
    settings = config.rollout
    listen_host = host or settings.host
    listen_port = settings.port if port is None else port
    server = listening(
        listen_host,
        listen_port,
        lambda: serve_gate(
            rollout_gate,
            listen_host,
            listen_port,
            token=token,
            hmac_secret=secret,
            max_body_bytes=settings.max_body_bytes,
        ),
    )
    log.info(
        "rollout gate on http://%s:%d%s",
        server.server_address[0],
        server.server_address[1],
        VERDICT_PATH,
    )
    stop = threading.Event()
    _stop_on_signals(stop.set)
    thread = threading.Thread(target=server.serve_forever, name="gate", daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
