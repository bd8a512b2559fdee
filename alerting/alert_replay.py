"""The alert rules in a replay: how many pages and rollbacks last month's traffic would have caused.

:class:`AlertReplay` is an evaluator tick hook for ``driftline backtest``: at each tick (event
time) it advances the same :class:`~alerting.rule_engine.RuleEngine` as ``driftline evaluate``
and runs the rollback decisions of firing ``action: rollback`` alerts through the same
:class:`~alerting.rollback_executor.RollbackExecutor`, forced to dry-run, on an in-memory ledger
(so the cooldown, the daily cap and exactly-once per incident apply as they would have). Each
alert transition and each rollback that would have happened becomes one JSON line:

``{"kind": "alert", "rule", "model", "version", "state", "at", "value"}`` with ``state`` one of
``pending``, ``firing``, ``resolved``, ``nodata``; and ``{"kind": "rollback", "model",
"from_version", "to_version", "rule", "at", "dry_run": true}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from alerting.alerting_step import rollback_request
from alerting.rollback_executor import RollbackExecutor
from alerting.rollback_ledger import MemoryRollbackLedger
from alerting.rule_engine import AlertEvent, RuleEngine, check_rules
from alerting.snapshot import Snapshot
from driftline.config import Config

__all__ = ["AlertReplay", "alert_line"]

REPORTED_STATES = ("pending", "firing", "resolved", "nodata")


def alert_line(event: AlertEvent) -> dict[str, Any]:
    return {
        "kind": "alert",
        "rule": event.rule.name,
        "model": event.model,
        "version": event.version,
        "state": event.state,
        "at": event.at_ms,
        "value": None if math.isnan(event.value) else event.value,
    }


class AlertReplay:
    """Evaluate the config's rules on each replayed snapshot; report lines to ``emit``."""

    def __init__(self, config: Config, emit: Callable[[str], object]) -> None:
        check_rules(config.rules)
        self.engine = RuleEngine(config.rules, config.alerting)
        self.ledger = MemoryRollbackLedger()
        self.executor = RollbackExecutor(config, self.ledger, [])
        self.emit = emit
        self.counts: Counter[str] = Counter()

    def after_figures(self, snapshot: Snapshot) -> None:
        self.step(snapshot, snapshot.taken_at_ms)

    def step(self, snapshot: Snapshot, at_ms: int) -> None:
        """Rules evaluated on ``snapshot`` at event time ``at_ms``."""
        changes = self.engine.evaluate(snapshot, at_ms)
        for model, versions in self.engine.healthy_versions(snapshot).items():
            self.ledger.mark_healthy(model, versions, at_ms)
        for event in changes:
            if event.state in REPORTED_STATES:
                self.counts[event.state] += 1
                self.emit(json.dumps(alert_line(event)))
            if event.state != "firing" or event.rule.action != "rollback":
                continue
            request = rollback_request(event, source="backtest")
            decision = self.executor.handle(dataclasses.replace(request, dry_run=True), at_ms)
            self.counts[decision.decision] += 1
            if decision.acted:
                self.emit(
                    json.dumps(
                        {
                            "kind": "rollback",
                            "model": request.model,
                            "from_version": request.version,
                            "to_version": decision.to_version,
                            "rule": request.rule,
                            "at": at_ms,
                            "dry_run": True,
                        }
                    )
                )

    def summary(self) -> dict[str, int]:
        """Alert transitions by state and rollback decisions by outcome."""
        return dict(sorted(self.counts.items()))
