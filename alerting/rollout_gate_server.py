"""The rollout gate's HTTP endpoints (``driftline gate``): Argo Rollouts' ``web`` metric and
Flagger's webhooks ask it at every step.

* ``GET /v1/verdict?model=M&candidate=V[&baseline=B][&step=S]`` answers **200** with the verdict
  JSON (``promote`` | ``hold`` | ``rollback``, reasons, evidence) whatever the verdict: Argo
  Rollouts counts a non-2xx answer as a measurement *error*, not a verdict, so the verdict is in
  the body for the AnalysisTemplate's ``successCondition``/``failureCondition``.
* ``POST /v1/flagger/<hook>`` takes Flagger's webhook payload (``name``, ``namespace``,
  ``phase``, ``metadata``: ``candidate`` required; ``model`` defaults to the canary's name;
  ``baseline``, ``step`` optional) and answers as Flagger reads status codes (2xx go, anything
  else no): ``confirm-promotion`` and ``confirm-traffic-increase`` answer 200 only for
  ``promote``, ``rollback`` answers 200 only for ``rollback``; otherwise **403** (a closed gate,
  as Flagger's own tester answers), the verdict JSON in the body, which Flagger logs with the
  failed check.

Each request, in order, stops at the first failure without side effects (the gate only reads):
path and method (404, 405), body size for POST (411, 413), authentication (401: the webhook
receiver's bearer token or HMAC signature, ``alerting.webhook_receiver.authenticated``; Flagger
cannot set headers, so its payload may carry the bearer token as ``metadata.token``), parameters
or payload (400), unknown model (404), then the verdict (503 if the store does not answer).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from alerting.json_http import JsonRequestHandler, json_body
from alerting.rollout_gate import RolloutGate, VerdictRequestError
from alerting.rollout_verdict import Verdict
from alerting.webhook_receiver import authenticated

__all__ = [
    "FLAGGER_HOOKS",
    "FLAGGER_PATH",
    "VERDICT_PATH",
    "FlaggerPayload",
    "GateServer",
    "flagger_status",
    "serve_gate",
]

log = logging.getLogger(__name__)

VERDICT_PATH = "/v1/verdict"
FLAGGER_PATH = "/v1/flagger/"
VERDICT_PARAMETERS = ("model", "candidate", "baseline", "step")
FlaggerHook = Literal["confirm-promotion", "confirm-traffic-increase", "rollback"]
FLAGGER_HOOKS: tuple[FlaggerHook, ...] = (
    "confirm-promotion",
    "confirm-traffic-increase",
    "rollback",
)
GATE_CLOSED = HTTPStatus.FORBIDDEN


class FlaggerPayload(BaseModel):
    """What Flagger POSTs to a webhook (``CanaryWebhookPayload``); later fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field("", max_length=253)
    phase: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


def flagger_status(hook: FlaggerHook, verdict: Verdict) -> int:
    """200 when the hook's answer is yes for this verdict, else 403 (Flagger: non-2xx is no)."""
    wanted = "rollback" if hook == "rollback" else "promote"
    return HTTPStatus.OK.value if verdict.verdict == wanted else GATE_CLOSED.value


class _BadRequest(ValueError):
    pass


def _query(raw: str) -> dict[str, str]:
    """Query parameters; ``+`` stays ``+`` (versions may hold one, Argo does not encode it)."""
    found: dict[str, str] = {}
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if name not in VERDICT_PARAMETERS:
            raise _BadRequest(f"unknown parameter {name!r} (use {', '.join(VERDICT_PARAMETERS)})")
        if name in found:
            raise _BadRequest(f"parameter {name!r} given twice")
        found[name] = value
    for name in ("model", "candidate"):
        if not found.get(name):
            raise _BadRequest(f"parameter {name!r} is required")
    return found


class GateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        gate: RolloutGate,
        *,
        token: bytes | None,
        hmac_secret: bytes | None,
        max_body_bytes: int,
    ) -> None:
        self.gate = gate
        self.token = token
        self.hmac_secret = hmac_secret
        self.max_body_bytes = max_body_bytes
        self.verdict_lock = threading.Lock()
        super().__init__(address, _Handler)

    def judge(self, parameters: Mapping[str, str]) -> Verdict:
        with self.verdict_lock:
            return self.gate.verdict(
                parameters["model"],
                parameters["candidate"],
                parameters.get("baseline") or None,
                parameters.get("step") or None,
            )


class _Handler(JsonRequestHandler):
    server: GateServer
    log_name = "gate"

    def _verdict(self, parameters: Mapping[str, str]) -> Verdict | None:
        """The verdict, or None after answering why there is none."""
        try:
            return self.server.judge(parameters)
        except VerdictRequestError as error:
            self._refuse(HTTPStatus(error.status), str(error))
        except Exception as error:  # the store is down: no verdict, never a guess
            log.exception("gate: no verdict")
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE.value, {"error": str(error)})
        return None

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/-/healthy":
            self._answer(200, {"status": "ok"})
            return
        if url.path != VERDICT_PATH:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path: {url.path}")
            return
        server = self.server
        if not authenticated(self._headers(), b"", server.token, server.hmac_secret):
            self._refuse(HTTPStatus.UNAUTHORIZED, "missing or wrong credentials")
            return
        try:
            parameters = _query(url.query)
        except _BadRequest as error:
            self._refuse(HTTPStatus.BAD_REQUEST, str(error))
            return
        verdict = self._verdict(parameters)
        if verdict is not None:
            self._answer(200, verdict.to_dict())

    def do_POST(self) -> None:
        server = self.server
        path = urlsplit(self.path).path
        hook = path[len(FLAGGER_PATH) :] if path.startswith(FLAGGER_PATH) else ""
        if hook not in FLAGGER_HOOKS:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path: {path}", close=True)
            return
        body = self._read_body(server.max_body_bytes)
        if body is None:
            return
        payload = _flagger_payload(body)
        if not (
            authenticated(self._headers(), body, server.token, server.hmac_secret)
            or _metadata_token_ok(payload, server.token)
        ):
            self._refuse(HTTPStatus.UNAUTHORIZED, "missing or wrong credentials")
            return
        if isinstance(payload, str):
            self._refuse(HTTPStatus.BAD_REQUEST, payload)
            return
        metadata = payload.metadata
        if not metadata.get("candidate"):
            self._refuse(HTTPStatus.BAD_REQUEST, "metadata.candidate is required")
            return
        parameters = {
            "model": metadata.get("model") or payload.name,
            "candidate": metadata["candidate"],
            "baseline": metadata.get("baseline", ""),
            "step": metadata.get("step", ""),
        }
        verdict = self._verdict(parameters)
        if verdict is not None:
            status = flagger_status(hook, verdict)
            self._answer(status, {"hook": hook, **verdict.to_dict()})


def _flagger_payload(body: bytes) -> FlaggerPayload | str:
    """The payload, or why it is not one."""
    try:
        data = json_body(body)
    except ValueError as error:
        return str(error)
    try:
        return FlaggerPayload.model_validate(data)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()[:10]
        )
        return f"not a Flagger webhook payload: {problems}"


def _metadata_token_ok(payload: FlaggerPayload | str, token: bytes | None) -> bool:
    if token is None or isinstance(payload, str):
        return False
    given = payload.metadata.get("token", "").encode()
    return bool(given) and hmac.compare_digest(given, token)


def serve_gate(
    gate: RolloutGate,
    host: str,
    port: int,
    *,
    token: bytes | None,
    hmac_secret: bytes | None,
    max_body_bytes: int,
) -> GateServer:
    """A bound server (not yet serving): call ``serve_forever`` and ``shutdown`` on it."""
    return GateServer(
        (host, port), gate, token=token, hmac_secret=hmac_secret, max_body_bytes=max_body_bytes
    )
