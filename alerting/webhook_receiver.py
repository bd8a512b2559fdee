"""The Alertmanager webhook receiver: ``POST /v1/alertmanager`` (webhook payload version 4).

Alertmanager routes alerts labelled ``action="rollback"`` here (``deploy/alertmanager/``). Each
request goes through, in order, and stops at the first failure without changing anything but a
count of refusals by status (``driftline_webhook_requests_refused_total``):

1. method (405 but for GET and POST), path (404), ``Content-Length`` present (411) and within
   ``max_body_bytes`` (413, the body is not read);
2. authentication (401): ``Authorization: Bearer <token>``, or ``X-Driftline-Signature:
   sha256=<hex HMAC-SHA256 of the body>``; both compared in constant time;
3. JSON (``json_http.json_body``: also too deep, or a string that is not UTF-8) and the payload
   schema (400), including the labels every rollback alert must carry
   (``alertname``, ``model``, ``version``), checked for all alerts before acting on any.

Then each firing rollback alert of a known ``action: rollback`` rule is claimed once per
(fingerprint, start) in Redis, so Alertmanager's re-sends and retries are acknowledged without
acting twice, and handed to the rollback executor (which decides once per incident, across both
paths). Resolved alerts are acknowledged and ignored. An unexpected failure (Redis down, a
model's state unreadable) answers 503 and releases that alert's claim, so Alertmanager's retry is
handled; the other alerts of the request are handled all the same, and count as duplicates then.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import math
import os
import re
from collections.abc import Mapping
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, Literal

import pydantic
import redis
from pydantic import BaseModel, ConfigDict, Field

from alerting.json_http import JsonRequestHandler, json_body
from alerting.rollback_executor import RollbackExecutor, RollbackRequest
from alerting.rollback_ledger import RollbackLedger
from driftline.alerting_config import WebhookReceiverConfig
from driftline.config import Config, ConfigError

__all__ = [
    "PATH",
    "SIGNATURE_HEADER",
    "AlertmanagerAlert",
    "AlertmanagerPayload",
    "WebhookReceiver",
    "authenticated",
    "load_secrets",
    "serve",
    "sign",
]

log = logging.getLogger(__name__)

PATH = "/v1/alertmanager"
SIGNATURE_HEADER = "X-Driftline-Signature"
REQUIRED_LABELS = ("alertname", "model", "version")


class _Lenient(BaseModel):
    # Alertmanager may add fields in later payload versions; the ones we use are checked.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AlertmanagerAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime.datetime
    endsAt: datetime.datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")


class AlertmanagerPayload(_Lenient):
    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=10_000)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Driftline-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def authenticated(
    headers: Mapping[str, str], body: bytes, token: bytes | None, hmac_secret: bytes | None
) -> bool:
    """The request's ``Authorization: Bearer`` token or ``X-Driftline-Signature`` matches (in
    constant time); everything is accepted when neither secret is set (``--dev``). Shared by every
    driftline HTTP endpoint (this receiver, the rollout gate)."""
    if token is None and hmac_secret is None:
        return True  # --dev without secrets
    authorization = headers.get("Authorization", "")
    if token is not None and authorization.startswith("Bearer "):
        given = authorization[len("Bearer ") :].strip().encode()
        if hmac.compare_digest(given, token):
            return True
    signature = headers.get(SIGNATURE_HEADER, "")
    if hmac_secret is not None and signature:
        return hmac.compare_digest(signature.encode(), sign(hmac_secret, body).encode())
    return False


def _read_secret(env: str | None, path: str | None, what: str) -> bytes | None:
    if path is not None:
        source = f"alerting.webhook.{what}_file = {path!r}"
        try:
            with open(path, "rb") as handle:
                secret = handle.read().strip()
        except OSError as error:
            raise ConfigError(f"{source}: {error}") from None
        if not secret:
            raise ConfigError(f"{source}: the file is empty")
    elif env is not None and os.environ.get(env):
        source = f"alerting.webhook.{what}_env = {env!r}"
        secret = os.environ[env].encode("utf-8", "surrogateescape")  # as the bytes were given
    else:
        return None
    if what == "token" and not _VISIBLE_ASCII.fullmatch(secret):
        # http.server reads headers as Latin-1, so a token of other bytes could never match.
        raise ConfigError(
            f"{source}: a bearer token must be visible ASCII characters (it is sent in an HTTP "
            "header), with no spaces"
        )
    return secret


_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")


def load_secrets(settings: WebhookReceiverConfig) -> tuple[bytes | None, bytes | None]:
    """``(bearer token, HMAC secret)`` from the files or environment variables configured."""
    token = _read_secret(settings.token_env, settings.token_file, "token")
    secret = _read_secret(settings.hmac_secret_env, settings.hmac_secret_file, "hmac_secret")
    return token, secret


def _ms(moment: datetime.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return round(moment.timestamp() * 1000)


class BadRequest(ValueError):
    """The request is refused with 400; nothing was changed."""


class AlertsFailed(RuntimeError):
    """Some alerts of a request failed, and the others were handled: answered with 503, so that
    Alertmanager sends the request again, when the alerts handled count as duplicates."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        failed = [result["fingerprint"] for result in results if result["outcome"] == "failed"]
        super().__init__(f"alert(s) {', '.join(failed)} failed; the others were handled")
        self.results = results


class WebhookReceiver:
    """The request handling, independent of the HTTP server (``serve`` wires it to one)."""

    def __init__(
        self,
        config: Config,
        ledger: RollbackLedger,
        executor: RollbackExecutor,
        *,
        token: bytes | None,
        hmac_secret: bytes | None,
        dev: bool = False,
    ) -> None:
        if token is None and hmac_secret is None and not dev:
            raise ConfigError(
                "the webhook receiver needs a secret: set the environment variable named by "
                "alerting.webhook.token_env (or token_file, hmac_secret_env, hmac_secret_file),"
                " or run with --dev on a development machine"
            )
        self.config = config
        self.settings = config.alerting.webhook
        self.ledger = ledger
        self.executor = executor
        self.token = token
        self.hmac_secret = hmac_secret
        self.rules = {rule.name: rule for rule in config.rules}

    def authenticated(self, headers: Mapping[str, str], body: bytes) -> bool:
        return authenticated(headers, body, self.token, self.hmac_secret)

    def count_refusal(self, status: HTTPStatus) -> None:
        """Count a refused request where the evaluator exports it: a wrong token in
        Alertmanager's config shows as 401s there, not as rollbacks that never happen."""
        try:
            self.ledger.count_webhook_refusal(status.value)
        except redis.RedisError as error:  # the refusal stands; only its count is lost
            log.warning("webhook: cannot count a %d refusal: %s", status.value, error)

    def parse(self, body: bytes) -> AlertmanagerPayload:
        try:
            data = json_body(body)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        try:
            payload = AlertmanagerPayload.model_validate(data)
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                for item in error.errors()[:10]
            )
            raise BadRequest(f"not an Alertmanager webhook payload v4: {problems}") from None
        for position, alert in enumerate(payload.alerts):
            if alert.status == "firing" and alert.labels.get("action") == "rollback":
                missing = [name for name in REQUIRED_LABELS if not alert.labels.get(name)]
                if missing:
                    raise BadRequest(f"alerts.{position}.labels: missing {', '.join(missing)}")
                if alert.annotations.get("value") is not None:
                    try:
                        float(alert.annotations["value"])
                    except ValueError:
                        raise BadRequest(
                            f"alerts.{position}.annotations.value: not a number"
                        ) from None
        return payload

    def act(self, payload: AlertmanagerPayload) -> list[dict[str, Any]]:
        """Each alert's result. Alerts are handled one by one, so one that fails (its model's
        state unreadable in Redis) does not keep the others of its group from acting; the
        request then raises :class:`AlertsFailed`, for Alertmanager to send it again."""
        results = []
        for alert in payload.alerts:
            try:
                results.append(self._act_on(alert))
            except Exception as error:
                log.exception("webhook: alert %s failed; to be sent again", alert.fingerprint)
                results.append(
                    {
                        "fingerprint": alert.fingerprint,
                        "alertname": alert.labels.get("alertname", ""),
                        "outcome": "failed",
                        "error": str(error),
                    }
                )
        if any(result["outcome"] == "failed" for result in results):
            raise AlertsFailed(results)
        return results

    def _act_on(self, alert: AlertmanagerAlert) -> dict[str, Any]:
        labels = alert.labels
        result: dict[str, Any] = {
            "fingerprint": alert.fingerprint,
            "alertname": labels.get("alertname", ""),
        }
        if alert.status != "firing":
            outcome = "ignored_resolved"
        elif labels.get("action") != "rollback":
            outcome = "ignored_not_rollback"
        else:
            rule = self.rules.get(labels["alertname"])
            if rule is None or rule.action != "rollback":
                outcome = "ignored_unknown_rule"
            else:
                starts_at_ms = _ms(alert.startsAt)
                if not self.ledger.claim_delivery(
                    alert.fingerprint, str(starts_at_ms), self.settings.dedup_ttl_seconds
                ):
                    outcome = "duplicate"
                else:
                    try:
                        value = float(alert.annotations.get("value", "nan"))
                        request = RollbackRequest(
                            rule=rule.name,
                            model=labels["model"],
                            version=labels["version"],
                            starts_at_ms=starts_at_ms,
                            value=value,
                            threshold=rule.threshold,
                            source="alertmanager",
                            deployment=labels.get("deployment", ""),
                            segment=labels.get("segment", ""),
                            summary=alert.annotations.get("summary", ""),
                            runbook_url=alert.annotations.get(
                                "runbook_url", self.config.alerting.runbook_url(rule)
                            ),
                            values={} if math.isnan(value) else {"alert": value},
                            dry_run=labels.get("dry_run") == "true",
                        )
                        decision = self.executor.handle(request)
                    except Exception:
                        self.ledger.release_delivery(alert.fingerprint, str(starts_at_ms))
                        raise
                    outcome = "handled"
                    result.update(
                        decision=decision.decision,
                        incident=decision.incident,
                        to_version=decision.to_version,
                    )
        self.ledger.count_webhook(outcome)
        result["outcome"] = outcome
        return result


class _Handler(JsonRequestHandler):
    server: _Server
    log_name = "webhook"

    def count_refusal(self, status: HTTPStatus) -> None:
        self.server.receiver.count_refusal(status)

    def do_GET(self) -> None:
        if self.path == "/-/healthy":
            self._answer(200, {"status": "ok"})
        elif self.path == "/openapi.json":
            from alerting.webhook_openapi import openapi_document

            self._answer(200, openapi_document())
        else:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path: {self.path}")

    def do_POST(self) -> None:
        receiver = self.server.receiver
        if self.path != PATH:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path: {self.path}", close=True)
            return
        body = self._read_body(receiver.settings.max_body_bytes)
        if body is None:
            return
        if not receiver.authenticated(self._headers(), body):
            self._refuse(HTTPStatus.UNAUTHORIZED, "missing or wrong credentials")
            return
        try:
            payload = receiver.parse(body)
        except BadRequest as error:
            self._refuse(HTTPStatus.BAD_REQUEST, str(error))
            return
        try:
            results = receiver.act(payload)
        except AlertsFailed as failed:
            answer = {"error": str(failed), "results": failed.results}
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE.value, answer)
            return
        except Exception as error:
            log.exception("webhook: handling failed; Alertmanager will retry")
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE.value, {"error": str(error)})
            return
        self._answer(200, {"results": results})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


def serve(receiver: WebhookReceiver, host: str, port: int) -> ThreadingHTTPServer:
    """A bound server (not yet serving): call ``serve_forever`` and ``shutdown`` on it."""
    return _Server((host, port), receiver)
