"""The rollback executor: decides whether a firing rollback alert rolls back, and carries it out.

For each :class:`RollbackRequest` (from the engine, the webhook receiver or a drill), in order:

1. Name the incident: rule + model + version + the alert's start. Every report of the same
   incident (Alertmanager re-sends, both paths at once) carries the same name.
2. Pick the target: the model's configured ``stable_version``, else the version that was healthy
   most recently (never the version being rolled back).
3. Ask the ledger for the one decision of this incident (atomic: exactly once per incident, the
   cooldown and the daily cap, see ``alerting.rollback_ledger``). An incident whose executor died
   halfway comes back as ``resume``: only its actions not yet recorded as done are run.
4. Dry-run (configured, or asked by the request): audit what would run, run nothing.
5. Otherwise run every action, each retried with exponential backoff; one failing action does not
   stop the others (an abort that worked is worth keeping when the Kafka message failed). The
   incident's claim is renewed before every attempt, each success is recorded, and the incident
   is completed last. Every action carries the incident id, so a receiver can drop the one
   repeat a crash between an action's success and its record can cause.
6. Audit the decision, declined ones included, with the numbers that caused it, and count it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerting.rollback_actions import ActionFailed, RollbackAction, RollbackOrder
from alerting.rollback_ledger import DecisionPolicy, RollbackLedger
from driftline.config import Config

__all__ = ["RollbackDecision", "RollbackExecutor", "RollbackRequest", "incident_name"]

log = logging.getLogger(__name__)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


CLAIM_MARGIN_SECONDS = 2.0
"""Added to an action's timeout for the work around the call (encoding, the Redis writes)."""


def incident_name(rule: str, model: str, version: str, starts_at_ms: int) -> str:
    return f"{rule}|{model}|{version}|{starts_at_ms}"


@dataclass(frozen=True)
class RollbackRequest:
    """A firing rollback alert, from whichever path saw it."""

    rule: str
    model: str
    version: str
    starts_at_ms: int
    value: float
    threshold: float
    source: str  # "engine" | "alertmanager" | "drill"
    deployment: str = ""
    segment: str = ""
    summary: str = ""
    runbook_url: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    dry_run: bool = False  # a request can ask for a dry run, never force a real one
    resubmitted: bool = False  # re-sent every tick while firing: a duplicate is not audited

    @property
    def incident(self) -> str:
        return incident_name(self.rule, self.model, self.version, self.starts_at_ms)


@dataclass(frozen=True)
class RollbackDecision:
    decision: str  # executed | dry_run | failed | declined_<verdict>
    incident: str
    request: RollbackRequest
    to_version: str | None
    at_ms: int
    dry_run: bool
    reason: str = ""
    actions: Sequence[Mapping[str, Any]] = ()

    @property
    def acted(self) -> bool:
        """Whether this decision is a rollback (done, attempted or rehearsed)."""
        return self.decision in ("executed", "failed", "dry_run")

    def audit_entry(self) -> dict[str, Any]:
        request = self.request
        return {
            "at_ms": self.at_ms,
            "decision": self.decision,
            "reason": self.reason,
            "incident": self.incident,
            "source": request.source,
            "rule": request.rule,
            "model": request.model,
            "from_version": request.version,
            "to_version": self.to_version,
            "deployment": request.deployment,
            "segment": request.segment,
            "value": request.value,
            "threshold": request.threshold,
            "values": dict(request.values),
            "starts_at_ms": request.starts_at_ms,
            "runbook_url": request.runbook_url,
            "summary": request.summary,
            "dry_run": self.dry_run,
            "actions": list(self.actions),
        }


class RollbackExecutor:
    def __init__(
        self,
        config: Config,
        ledger: RollbackLedger,
        actions: Sequence[RollbackAction],
        *,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.policy = config.alerting.rollback
        self.ledger = ledger
        self.actions = list(actions)
        self.clock_ms = clock_ms
        self.sleep = sleep

    def target(self, model: str, from_version: str) -> str | None:
        stable = self.config.model(model).stable_version
        if stable is not None and stable != from_version:
            return stable
        healthy = {v: at for v, at in self.ledger.healthy(model).items() if v != from_version}
        if not healthy:
            return None
        return max(healthy, key=lambda version: (healthy[version], version))

    def handle(self, request: RollbackRequest, now_ms: int | None = None) -> RollbackDecision:
        now_ms = self.clock_ms() if now_ms is None else now_ms
        policy = self.policy
        dry_run = policy.dry_run or request.dry_run
        target = self.target(request.model, request.version)
        incident = request.incident
        ledger_key = {
            "namespace": "dry-run" if dry_run else "live",
            "model": request.model,
            "incident": hashlib.sha256(incident.encode()).hexdigest()[:32],
        }
        verdict = self.ledger.decide(
            **ledger_key,
            now_ms=now_ms,
            has_target=target is not None,
            policy=DecisionPolicy(
                cooldown_ms=round(policy.cooldown_seconds * 1000),
                max_per_day=policy.max_per_day,
                incident_ttl_ms=policy.incident_ttl_seconds * 1000,
                claim_ms=self.claim_ms,
            ),
        )
        if verdict == "duplicate" and request.resubmitted:
            return RollbackDecision(
                "declined_duplicate",
                incident,
                request,
                target,
                now_ms,
                dry_run,
                reason=_DECLINED[verdict],
            )  # not audited again
        if verdict not in ("go", "resume"):
            decision = RollbackDecision(
                f"declined_{verdict}",
                incident,
                request,
                target,
                now_ms,
                dry_run,
                reason=_DECLINED[verdict],
            )
            return self._record(decision)
        assert target is not None
        order = RollbackOrder(
            incident=incident,
            model=request.model,
            from_version=request.version,
            to_version=target,
            rule=request.rule,
            deployment=request.deployment,
            segment=request.segment,
            value=request.value,
            threshold=request.threshold,
            runbook_url=request.runbook_url,
            summary=request.summary,
            starts_at_ms=request.starts_at_ms,
            at_ms=now_ms,
            source=request.source,
            values=request.values,
        )
        if dry_run:
            planned = [{"action": a.name, "would": a.describe(order)} for a in self.actions]
            reason = "rollback.dry_run is on" if policy.dry_run else "the request asked for it"
            self.ledger.complete(**ledger_key, outcome="dry_run")
            return self._record(
                RollbackDecision(
                    "dry_run", incident, request, target, now_ms, True, reason, planned
                )
            )
        done = self.ledger.actions_done(**ledger_key) if verdict == "resume" else set()
        results: list[dict[str, Any]] = []
        for action in self.actions:
            if action.name in done:
                results.append(
                    {
                        "action": action.name,
                        "ok": True,
                        "attempts": 0,
                        "detail": "done before the previous executor stopped",
                    }
                )
                continue
            result = self._run(action, order, ledger_key)
            if result["ok"]:
                self.ledger.action_done(**ledger_key, action=action.name)
            results.append(result)
        failed = [result["action"] for result in results if not result["ok"]]
        if failed:
            decision = RollbackDecision(
                "failed",
                incident,
                request,
                target,
                now_ms,
                False,
                f"actions failed: {', '.join(failed)}",
                results,
            )
        else:
            reason = "" if self.actions else "no rollback actions are configured"
            if verdict == "resume":
                reason = "resumed: the executor that decided it stopped before finishing"
            decision = RollbackDecision(
                "executed", incident, request, target, now_ms, False, reason, results
            )
        self.ledger.complete(**ledger_key, outcome=decision.decision)
        return self._record(decision)

    @property
    def claim_ms(self) -> int:
        """How long one action attempt and the backoff after it may take: the claim, renewed
        before every attempt, runs out only when its executor stopped."""
        timeouts = [getattr(a, "timeout_seconds", 10.0) for a in self.policy.actions]
        attempt_s = max(timeouts, default=10.0) + CLAIM_MARGIN_SECONDS
        return round((attempt_s + self.policy.backoff_max_seconds) * 1000)

    def _run(
        self, action: RollbackAction, order: RollbackOrder, ledger_key: Mapping[str, str]
    ) -> dict[str, Any]:
        policy = self.policy
        error = ""
        for attempt in range(1 + policy.retries):
            self.ledger.renew_claim(**ledger_key, until_ms=self.clock_ms() + self.claim_ms)
            try:
                detail = action.run(order)
                return {
                    "action": action.name,
                    "ok": True,
                    "attempts": attempt + 1,
                    "detail": detail,
                }
            except ActionFailed as failure:
                error = str(failure)
            except Exception as failure:  # an action's bug must not lose the audit entry
                error = f"{type(failure).__name__}: {failure}"
            log.warning(
                "rollback action %s failed (attempt %d): %s", action.name, attempt + 1, error
            )
            if attempt < policy.retries:
                self.sleep(min(policy.backoff_seconds * 2**attempt, policy.backoff_max_seconds))
        return {"action": action.name, "ok": False, "attempts": 1 + policy.retries, "error": error}

    def _record(self, decision: RollbackDecision) -> RollbackDecision:
        self.ledger.audit(decision.audit_entry())
        request = decision.request
        log.log(
            logging.WARNING if decision.acted else logging.INFO,
            "rollback %s: %s %s -> %s (rule %s, value %g, incident %s)%s",
            decision.decision,
            request.model,
            request.version,
            decision.to_version,
            request.rule,
            request.value,
            decision.incident,
            f": {decision.reason}" if decision.reason else "",
        )
        return decision

    def close(self) -> None:
        for action in self.actions:
            action.close()


_DECLINED = {
    "duplicate": "this incident was already decided",
    "no_target": "no stable_version configured and no other version was healthy",
    "cooldown": "the model was rolled back within rollback.cooldown_seconds",
    "daily_cap": "rollback.max_per_day reached for this model",
}
