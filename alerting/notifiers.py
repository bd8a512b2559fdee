"""Notifiers of the built-in engine: Alertmanager's v2 API, a generic JSON webhook, the log.

Contract of a :class:`Notifier`:

1. :meth:`Notifier.notify` gets, after each tick, the alerts that changed state and every alert
   still firing. It may block for at most its timeout; it raises on failure (the caller counts
   the failure and goes on: a notifier never stops the engine or a rollback).
2. :meth:`Notifier.close` releases whatever the notifier holds.

The Alertmanager notifier follows Prometheus' own protocol: a firing alert is re-sent every
``resend_seconds`` with ``endsAt`` a few re-sends ahead (so Alertmanager resolves it by itself if
driftline goes away), and a resolved one is sent once with ``endsAt`` = now.
"""

from __future__ import annotations

import abc
import datetime
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from alerting.rule_engine import AlertEvent
from driftline.alerting_config import (
    AlertingConfig,
    AlertmanagerNotifierConfig,
    LogNotifierConfig,
    WebhookNotifierConfig,
)

__all__ = [
    "AlertmanagerNotifier",
    "LogNotifier",
    "Notifier",
    "WebhookNotifier",
    "alert_labels",
    "build_notifiers",
    "rfc3339",
]

log = logging.getLogger(__name__)


def rfc3339(ms: int) -> str:
    """UTC time with milliseconds, as Alertmanager reads and writes it.

    >>> rfc3339(1700000000123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_labels(event: AlertEvent) -> dict[str, str]:
    """The alert's labels, as the exported Prometheus rule gives them (empty ones left out)."""
    rule = event.rule
    labels = {name: value for name, value in event.labels.items() if value != ""}
    labels.update(rule.labels)
    labels.update(alertname=rule.name, severity=rule.severity, action=rule.action)
    return labels


def alert_annotations(event: AlertEvent) -> dict[str, str]:
    annotations = {
        "summary": event.summary,
        "description": event.description,
        "runbook_url": event.runbook_url,
        "value": f"{event.value:g}",
        "threshold": f"{event.rule.threshold:g}",
    }
    if event.reason:
        annotations["reason"] = event.reason
    return {name: text for name, text in annotations.items() if text}


def _post_json(url: str, body: Any, headers: dict[str, str], timeout_s: float) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"POST {url}: HTTP {error.code} {error.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(f"POST {url}: {error}") from None


class Notifier(abc.ABC):
    name: str

    @abc.abstractmethod
    def notify(
        self, changes: Sequence[AlertEvent], firing: Sequence[AlertEvent], now_ms: int
    ) -> None:
        """Deliver what changed (and, if this notifier re-sends, what still fires)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class AlertmanagerNotifier(Notifier):
    name = "alertmanager"

    def __init__(self, settings: AlertmanagerNotifierConfig, external_url: str | None) -> None:
        self.settings = settings
        self.external_url = external_url or ""
        self._last_sent_ms: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}

    def _alert(self, event: AlertEvent, now_ms: int, ends_at_ms: int) -> dict[str, Any]:
        alert: dict[str, Any] = {
            "labels": alert_labels(event),
            "annotations": alert_annotations(event),
            "startsAt": rfc3339(event.starts_at_ms or now_ms),
            "endsAt": rfc3339(ends_at_ms),
        }
        if self.external_url:
            alert["generatorURL"] = self.external_url
        return alert

    def notify(
        self, changes: Sequence[AlertEvent], firing: Sequence[AlertEvent], now_ms: int
    ) -> None:
        resend_ms = round(self.settings.resend_seconds * 1000)
        alerts = []
        for event in changes:
            if event.previous == "firing" and event.state != "firing":
                alerts.append(self._alert(event, now_ms, now_ms))
                self._last_sent_ms.pop(_identity(event), None)
        for event in firing:
            identity = _identity(event)
            if now_ms - self._last_sent_ms.get(identity, -resend_ms) >= resend_ms:
                alerts.append(self._alert(event, now_ms, now_ms + 4 * resend_ms))
                self._last_sent_ms[identity] = now_ms
        if alerts:
            url = self.settings.url.rstrip("/") + "/api/v2/alerts"
            _post_json(url, alerts, {}, self.settings.timeout_seconds)


def _identity(event: AlertEvent) -> tuple[str, tuple[tuple[str, str], ...]]:
    return event.rule.name, tuple(sorted(event.labels.items()))


class WebhookNotifier(Notifier):
    """POST ``{"alerts": [...]}`` with one entry per state change in ``states``."""

    name = "webhook"

    def __init__(self, settings: WebhookNotifierConfig) -> None:
        self.settings = settings

    def notify(
        self, changes: Sequence[AlertEvent], firing: Sequence[AlertEvent], now_ms: int
    ) -> None:
        selected = [event for event in changes if event.state in self.settings.states]
        if not selected:
            return
        headers = dict(self.settings.headers)
        if self.settings.bearer_token_env:
            token = os.environ.get(self.settings.bearer_token_env, "")
            headers["Authorization"] = f"Bearer {token}"
        body = {"alerts": [event_json(event) for event in selected]}
        _post_json(self.settings.url, body, headers, self.settings.timeout_seconds)


def event_json(event: AlertEvent) -> dict[str, Any]:
    return {
        "rule": event.rule.name,
        "state": event.state,
        "previous": event.previous,
        "at_ms": event.at_ms,
        "starts_at_ms": event.starts_at_ms,
        "labels": alert_labels(event),
        "value": event.value,
        "values": dict(event.values),
        "threshold": event.rule.threshold,
        "summary": event.summary,
        "description": event.description,
        "runbook_url": event.runbook_url,
        "reason": event.reason,
    }


class LogNotifier(Notifier):
    name = "log"

    def __init__(self, settings: LogNotifierConfig) -> None:
        self.settings = settings

    def notify(
        self, changes: Sequence[AlertEvent], firing: Sequence[AlertEvent], now_ms: int
    ) -> None:
        for event in changes:
            if event.state not in self.settings.states:
                continue
            level = logging.WARNING if event.state == "firing" else logging.INFO
            log.log(
                level,
                "alert %s %s -> %s %s value=%g%s runbook=%s",
                event.rule.name,
                event.previous,
                event.state,
                alert_labels(event),
                event.value,
                f" ({event.reason})" if event.reason else "",
                event.runbook_url,
            )


def build_notifiers(alerting: AlertingConfig) -> list[Notifier]:
    notifiers: list[Notifier] = []
    for settings in alerting.notifiers:
        if isinstance(settings, AlertmanagerNotifierConfig):
            notifiers.append(AlertmanagerNotifier(settings, alerting.external_url))
        elif isinstance(settings, WebhookNotifierConfig):
            notifiers.append(WebhookNotifier(settings))
        else:
            notifiers.append(LogNotifier(settings))
    return notifiers
