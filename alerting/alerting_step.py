"""The alert rules inside ``driftline evaluate``: the evaluator's tick hook, and its dispatcher.

Lifecycle:

1. :meth:`AlertingStep.after_figures` runs in the evaluator's tick, on the complete snapshot: it
   advances the rule engine, exports alert states and rollback counters into the snapshot, and
   records which versions are healthy. It does no network I/O except one Redis round trip.
2. What changed is queued for a single background worker, which calls the notifiers and hands
   firing ``action: rollback`` alerts to the rollback executor. A slow Alertmanager or a
   retried rollback action never delays a tick.
3. :meth:`AlertingStep.close` lets the worker finish what is queued, then releases the
   notifiers and actions.

The engine's alert timers are saved in Redis every tick, and :meth:`AlertingStep.take_over`
(called when an evaluator becomes the active one, see ``alerting.evaluator_lease``) restores them.
Every firing rollback alert is re-submitted each tick: the ledger executes each incident at most
once and hands an unfinished one out again, so a rollback the previous evaluator decided is not
repeated and one it left halfway is not lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from alerting import metric_names as names
from alerting.notifiers import Notifier, build_notifiers
from alerting.rollback_actions import build_actions
from alerting.rollback_executor import RollbackExecutor, RollbackRequest
from alerting.rollback_ledger import AlertingKeys, RedisRollbackLedger, RollbackLedger
from alerting.rule_engine import AlertEvent, RuleEngine, check_rules
from alerting.snapshot import Snapshot
from driftline.config import Config

__all__ = ["AlertingStep", "EngineStateStore", "build_alerting_step", "rollback_request"]

log = logging.getLogger(__name__)


def rollback_request(event: AlertEvent, source: str = "engine") -> RollbackRequest:
    """The rollback a firing ``action: rollback`` alert asks for."""
    return RollbackRequest(
        rule=event.rule.name,
        model=event.model,
        version=event.version,
        starts_at_ms=event.starts_at_ms or event.at_ms,
        value=event.value,
        threshold=event.rule.threshold,
        source=source,
        deployment=event.labels.get("deployment", ""),
        segment=event.labels.get("segment", ""),
        summary=event.summary,
        runbook_url=event.runbook_url,
        values=dict(event.values),
    )


def _rollbacks(
    changes: Sequence[AlertEvent], firing: Sequence[AlertEvent]
) -> list[RollbackRequest]:
    """Rollbacks for alerts that just fired, and re-submissions of those still firing.

    Re-submitting every tick is what lets a rollback whose executor died halfway (or that a
    previous active evaluator decided) be resumed; the ledger answers ``duplicate`` to the rest.
    """
    requests = [
        rollback_request(event)
        for event in changes
        if event.state == "firing" and event.rule.action == "rollback"
    ]
    fresh = {request.incident for request in requests}
    for event in firing:
        request = rollback_request(event)
        if event.rule.action == "rollback" and request.incident not in fresh:
            requests.append(dataclasses.replace(request, resubmitted=True))
    return requests


@dataclass(frozen=True)
class _Work:
    changes: Sequence[AlertEvent]
    firing: Sequence[AlertEvent]
    rollbacks: Sequence[RollbackRequest]
    now_ms: int


class AlertingStep:
    def __init__(
        self,
        engine: RuleEngine,
        ledger: RollbackLedger,
        notifiers: Sequence[Notifier],
        executor: RollbackExecutor | None,
        state: EngineStateStore | None = None,
    ) -> None:
        self.engine = engine
        self.state = state
        self.ledger = ledger
        self.notifiers = list(notifiers)
        self.executor = executor
        self.notification_failures: dict[str, int] = defaultdict(int)
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="alert-dispatch", daemon=True)
        self._worker.start()

    def after_figures(self, snapshot: Snapshot) -> None:
        now_ms = snapshot.taken_at_ms
        changes = self.engine.evaluate(snapshot, now_ms)
        self.engine.add_samples(snapshot)
        try:
            if self.state is not None:
                self.state.save(self.engine.export_state())
            for model, versions in self.engine.healthy_versions(snapshot).items():
                self.ledger.mark_healthy(model, versions, now_ms)
            for (model, rule, decision), count in sorted(self.ledger.decision_counts().items()):
                snapshot.add(names.ROLLBACK_DECISIONS_TOTAL, (model, rule, decision), count)
            for outcome, count in sorted(self.ledger.webhook_counts().items()):
                snapshot.add(names.WEBHOOK_ALERTS_TOTAL, (outcome,), count)
            for status, count in sorted(self.ledger.webhook_refusals().items()):
                snapshot.add(names.WEBHOOK_REQUESTS_REFUSED_TOTAL, (str(status),), count)
        except redis.RedisError as error:  # alert states still go out; counters come back later
            log.warning("alerting ledger unavailable this tick: %s", error)
        for notifier, count in sorted(self.notification_failures.items()):
            snapshot.add(names.NOTIFICATIONS_FAILED_TOTAL, (notifier,), count)
        firing = self.engine.firing(now_ms)
        self._queue.put(_Work(changes, firing, _rollbacks(changes, firing), now_ms))

    def take_over(self, now_ms: int) -> None:
        """Continue where the previous active evaluator stopped: restore the alert timers."""
        if self.state is not None:
            self.engine.restore_state(self.state.load())
            log.info("taking over: %d alerts restored", len(self.engine.alerts))

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                self._dispatch(work)
            except Exception:  # the worker must outlive any one failure
                log.exception("alert dispatch failed")

    def _dispatch(self, work: _Work) -> None:
        for notifier in self.notifiers:
            try:
                notifier.notify(work.changes, work.firing, work.now_ms)
            except Exception as error:
                self.notification_failures[notifier.name] += 1
                log.warning("notifier %s failed: %s", notifier.name, error)
        if self.executor is None:
            return
        for request in work.rollbacks:
            try:
                self.executor.handle(request)
            except Exception:
                log.exception(
                    "rollback of %s %s failed before a decision", request.model, request.version
                )

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()
        for notifier in self.notifiers:
            notifier.close()
        if self.executor is not None:
            self.executor.close()


def build_alerting_step(config: Config, client: redis.Redis) -> AlertingStep | None:
    """The step ``driftline evaluate`` runs, or None when there are no rules or it is off."""
    if not config.rules or not config.alerting.engine.enabled:
        return None
    for warning in check_rules(config.rules):
        log.warning("%s", warning)
    ledger = RedisRollbackLedger(
        client, AlertingKeys(config.redis.key_prefix), config.alerting.audit_max_entries
    )
    executor = None
    if config.alerting.engine.rollback:
        actions = build_actions(config.alerting.rollback.actions, config, client)
        executor = RollbackExecutor(config, ledger, actions)
    engine = RuleEngine(config.rules, config.alerting)
    state = EngineStateStore(client, AlertingKeys(config.redis.key_prefix).engine_state())
    return AlertingStep(engine, ledger, build_notifiers(config.alerting), executor, state)


class EngineStateStore:
    """The rule engine's alert timers, as one JSON value in Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def save(self, records: list[dict[str, object]]) -> None:
        self.client.set(self.key, json.dumps(records, sort_keys=True))

    def load(self) -> list[dict[str, object]]:
        stored = self.client.get(self.key)
        return [] if stored is None else list(json.loads(stored))
