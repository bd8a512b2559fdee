"""Rollback actions: the ways a decided rollback is carried out.

Contract of a :class:`RollbackAction`:

1. :meth:`RollbackAction.run` carries out one :class:`RollbackOrder` and returns a short detail, or
   raises :class:`ActionFailed`. It must be safe to run again for the same order: the executor
   retries a failed run with backoff, and a receiver of the order may see it twice (every order
   carries its ``incident`` id, so receivers can deduplicate).
2. :meth:`RollbackAction.describe` says what ``run`` would do, without doing it (dry-run).
3. :meth:`RollbackAction.close` releases clients; the action is not used after it.

Actions: an HTTP webhook (JSON order), a message on the Kafka control topic, a Redis key holding
the version to serve, and the Argo Rollouts abort (a merge patch of the Rollout's ``status``
subresource through the Kubernetes API, as ``kubectl argo rollouts abort`` sends it).
"""

from __future__ import annotations

import abc
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from confluent_kafka import KafkaError, Message, Producer

from driftline.alerting_config import (
    ArgoRolloutsActionConfig,
    KafkaControlActionConfig,
    RedisKeyActionConfig,
    RollbackActionConfig,
    WebhookActionConfig,
)
from driftline.config import Config

__all__ = [
    "ActionFailed",
    "ArgoRolloutsAbort",
    "KafkaControlMessage",
    "RedisActiveVersion",
    "RollbackAction",
    "RollbackOrder",
    "WebhookOrder",
    "build_actions",
]

MERGE_PATCH = "application/merge-patch+json"
ABORT_PATCH = b'{"status":{"abort":true}}'


class ActionFailed(RuntimeError):
    """A rollback action did not complete; the message says why."""


@dataclass(frozen=True)
class RollbackOrder:
    """Everything a rollback action, and whoever receives it, needs to know."""

    incident: str
    model: str
    from_version: str
    to_version: str
    rule: str
    deployment: str
    segment: str
    value: float
    threshold: float
    runbook_url: str
    summary: str
    starts_at_ms: int
    at_ms: int
    source: str
    values: Mapping[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["values"] = dict(self.values)
        return body


class RollbackAction(abc.ABC):
    name: str

    @abc.abstractmethod
    def run(self, order: RollbackOrder) -> str:
        """Carry out ``order``; return a short detail or raise :class:`ActionFailed`."""

    @abc.abstractmethod
    def describe(self, order: RollbackOrder) -> str:
        """What :meth:`run` would do (for dry-runs and the audit)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""


def _http(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except (urllib.error.URLError, OSError) as error:
        raise ActionFailed(f"{method} {url}: {error}") from None


def _secret_from_env(name: str | None) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ActionFailed(f"environment variable {name} is not set")
    return value


class WebhookOrder(RollbackAction):
    """POST the order as JSON; any 2xx answer is success."""

    name = "webhook"

    def __init__(self, settings: WebhookActionConfig) -> None:
        self.settings = settings

    def describe(self, order: RollbackOrder) -> str:
        return f"POST {self.settings.url}"

    def run(self, order: RollbackOrder) -> str:
        headers = {"Content-Type": "application/json", **self.settings.headers}
        token = _secret_from_env(self.settings.bearer_token_env)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps({"type": "rollback", **order.as_json()}).encode()
        status, answer = _http(
            "POST", self.settings.url, body, headers, self.settings.timeout_seconds
        )
        if not 200 <= status < 300:
            raise ActionFailed(f"POST {self.settings.url}: HTTP {status} {answer[:200]!r}")
        return f"POST {self.settings.url}: HTTP {status}"


class KafkaControlMessage(RollbackAction):
    """One JSON rollback command on the control topic, keyed by model, delivery awaited."""

    name = "kafka_control"

    def __init__(self, settings: KafkaControlActionConfig, config: Config) -> None:
        self.settings = settings
        self.topic = settings.topic or config.topics.control
        self._producer_settings: dict[str, Any] = {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "enable.idempotence": True,
            **config.kafka.client,
            **config.kafka.producer,
        }
        self._producer: Producer | None = None

    def describe(self, order: RollbackOrder) -> str:
        return f"produce rollback of {order.model} to {order.to_version} on {self.topic}"

    def run(self, order: RollbackOrder) -> str:
        if self._producer is None:
            self._producer = Producer(self._producer_settings)
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)

        body = json.dumps({"type": "rollback", **order.as_json()}).encode()
        self._producer.produce(
            self.topic, value=body, key=order.model.encode(), on_delivery=delivered
        )
        if self._producer.flush(self.settings.timeout_seconds) != 0:
            # Dropped, not left queued: a retry produces its own copy, and this one delivered
            # later, once the broker is back, would be a second rollback command.
            self._producer.purge()
            self._producer.flush(0)
            raise ActionFailed(
                f"{self.topic}: not delivered within {self.settings.timeout_seconds}s"
            )
        if failures:
            raise ActionFailed(f"{self.topic}: {failures[0]}")
        return f"produced to {self.topic}"

    def close(self) -> None:
        if self._producer is not None:
            self._producer.purge()  # every run() waited for its delivery or dropped it
            self._producer.flush(0)
            self._producer = None


class RedisActiveVersion(RollbackAction):
    """SET the key services read the version to serve from."""

    name = "redis_key"

    def __init__(self, settings: RedisKeyActionConfig, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client

    def _key(self, order: RollbackOrder) -> str:
        return self.settings.key.format(model=order.model)

    def describe(self, order: RollbackOrder) -> str:
        return f"SET {self._key(order)} {order.to_version}"

    def run(self, order: RollbackOrder) -> str:
        try:
            self.client.set(self._key(order), order.to_version)
        except redis.RedisError as error:
            raise ActionFailed(f"SET {self._key(order)}: {error}") from None
        return self.describe(order)


class ArgoRolloutsAbort(RollbackAction):
    """``kubectl argo rollouts abort``, as its HTTP request to the Kubernetes API.

    ``PATCH /apis/argoproj.io/v1alpha1/namespaces/<ns>/rollouts/<name>/status`` with
    ``Content-Type: application/merge-patch+json`` and body ``{"status":{"abort":true}}``; like
    the plugin, a 404 on the status subresource (older CRDs without it) retries on the Rollout.
    Abort sends traffic back to the stable ReplicaSet; ``spec.template`` still names the new
    version, so the runbook says how to revert it for good.
    """

    name = "argo_rollouts"

    def __init__(self, settings: ArgoRolloutsActionConfig) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        if settings.api_url.startswith("https://"):
            ca_file = (
                settings.ca_file if settings.ca_file and os.path.exists(settings.ca_file) else None
            )
            self._context = ssl.create_default_context(cafile=ca_file)

    def path(self, order: RollbackOrder) -> str:
        name = self.settings.rollout.format(model=order.model, version=order.from_version)
        return f"/apis/argoproj.io/v1alpha1/namespaces/{self.settings.namespace}/rollouts/{name}"

    def describe(self, order: RollbackOrder) -> str:
        return f"PATCH {self.settings.api_url}{self.path(order)}/status {ABORT_PATCH.decode()}"

    def _token(self) -> str:
        token = _secret_from_env(self.settings.token_env)
        if token is not None:
            return token
        if self.settings.token_file is None:
            raise ActionFailed("no token_env or token_file for the Kubernetes API")
        try:
            with open(self.settings.token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as error:
            raise ActionFailed(f"token_file {self.settings.token_file}: {error}") from None

    def run(self, order: RollbackOrder) -> str:
        headers = {
            "Content-Type": MERGE_PATCH,
            "Accept": "application/json",
            "Authorization": f"Bearer {self._token()}",
        }
        base = self.settings.api_url.rstrip("/") + self.path(order)
        status, answer = 0, b""
        for url in (base + "/status", base):
            status, answer = _http(
                "PATCH", url, ABORT_PATCH, headers, self.settings.timeout_seconds, self._context
            )
            if status != 404:
                break
        if not 200 <= status < 300:
            raise ActionFailed(f"PATCH {base}/status: HTTP {status} {answer[:200]!r}")
        return f"PATCH {url}: HTTP {status}"


def build_actions(
    settings: Sequence[RollbackActionConfig], config: Config, client: redis.Redis | None
) -> list[RollbackAction]:
    actions: list[RollbackAction] = []
    for action in settings:
        if isinstance(action, WebhookActionConfig):
            actions.append(WebhookOrder(action))
        elif isinstance(action, KafkaControlActionConfig):
            actions.append(KafkaControlMessage(action, config))
        elif isinstance(action, RedisKeyActionConfig):
            if client is None:
                raise ValueError("the redis_key rollback action needs a Redis client")
            actions.append(RedisActiveVersion(action, client))
        else:
            actions.append(ArgoRolloutsAbort(action))
    return actions
