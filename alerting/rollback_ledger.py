"""The rollback ledger: what was decided, when, and how often; one interface, two backends.

:class:`RedisRollbackLedger` is shared by every process that can roll back (``driftline
evaluate`` and ``driftline webhook``), so an incident reported by both paths is decided once.
:class:`MemoryRollbackLedger` keeps the same semantics in one process, for ``backtest``.

Contract of :meth:`RollbackLedger.decide`, one atomic step per incident:

1. An incident already decided (any verdict, including a declined one) is a ``duplicate``: every
   incident gets exactly one decision, however often Alertmanager or the engine report it.
2. Without a target version it is ``no_target``.
3. Within ``policy.cooldown_ms`` of the model's last rollback it is ``cooldown``.
4. With ``policy.max_per_day`` rollbacks of the model in the last 24 h it is ``daily_cap``.
5. Otherwise ``go``: the incident, the model's last rollback time and its daily count are written
   in the same step, so two processes racing on one incident cannot both go.
6. A ``go`` incident stays *claimed* (``running``) until :meth:`RollbackLedger.complete`; the
   executor renews the claim before every action attempt. An incident whose claim ran out (its
   process died between actions) is handed out once more as ``resume``: the new executor runs
   only the actions :meth:`RollbackLedger.actions_done` does not list. So a rollback is neither
   repeated nor lost when its evaluator is killed halfway.

Dry-run decisions live in their own ``namespace``: rehearsing never spends the live cooldown.
Times are the caller's (``now_ms``), so a backtest replays last month on event time.
"""

from __future__ import annotations

import abc
import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

__all__ = [
    "AlertingKeys",
    "DecisionPolicy",
    "MemoryRollbackLedger",
    "RedisRollbackLedger",
    "RollbackLedger",
    "Verdict",
]

Verdict = Literal["go", "resume", "duplicate", "no_target", "cooldown", "daily_cap"]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class DecisionPolicy:
    """How often a model may roll back, and how long its incidents are remembered and claimed."""

    cooldown_ms: int
    max_per_day: int
    incident_ttl_ms: int
    claim_ms: int = 60_000


@dataclass(frozen=True)
class AlertingKeys:
    """Redis keys of the alerting side. One model's rollback keys share the tag
    ``{alerting:<model>}`` (one Redis Cluster slot for the decision script)."""

    prefix: str = "dl"

    def incident(self, namespace: str, model: str, incident: str) -> str:
        return f"{self.prefix}:{{alerting:{model}}}:{namespace}:incident:{incident}"

    def incident_actions(self, namespace: str, model: str, incident: str) -> str:
        return f"{self.prefix}:{{alerting:{model}}}:{namespace}:incident:{incident}:actions"

    def last_rollback(self, namespace: str, model: str) -> str:
        return f"{self.prefix}:{{alerting:{model}}}:{namespace}:last-rollback"

    def rollbacks(self, namespace: str, model: str) -> str:
        return f"{self.prefix}:{{alerting:{model}}}:{namespace}:rollbacks"

    def healthy(self, model: str) -> str:
        return f"{self.prefix}:{{alerting:{model}}}:healthy-versions"

    def audit(self) -> str:
        return f"{self.prefix}:{{alerting}}:audit"

    def decisions(self) -> str:
        return f"{self.prefix}:{{alerting}}:decisions"

    def webhook_outcomes(self) -> str:
        return f"{self.prefix}:{{alerting}}:webhook-outcomes"

    def webhook_refusals(self) -> str:
        return f"{self.prefix}:{{alerting}}:webhook-refusals"

    def engine_state(self) -> str:
        return f"{self.prefix}:{{alerting}}:engine-state"

    def evaluator_lease(self) -> str:
        return f"{self.prefix}:{{alerting}}:evaluator-lease"

    def delivery(self, fingerprint: str, starts_at: str) -> str:
        return f"{self.prefix}:{{alerting}}:delivery:{fingerprint}:{starts_at}"


_DECIDE = """
-- KEYS: incident, last rollback, rollbacks of the last day (sorted set)
-- ARGV: now_ms, cooldown_ms, max_per_day, incident_ttl_ms, has_target (0/1), incident id,
--       claim_ms
local now = tonumber(ARGV[1])
local previous = redis.call('GET', KEYS[1])
if previous then
  if string.sub(previous, 1, 8) == 'running:' and now >= tonumber(string.sub(previous, 9)) then
    redis.call('SET', KEYS[1], 'running:' .. (now + tonumber(ARGV[7])), 'KEEPTTL')
    return {'resume', previous}
  end
  return {'duplicate', previous}
end
local verdict = 'go'
if ARGV[5] == '0' then
  verdict = 'no_target'
else
  local last = redis.call('GET', KEYS[2])
  if last and now - tonumber(last) < tonumber(ARGV[2]) then
    verdict = 'cooldown'
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400000)
    if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then verdict = 'daily_cap' end
  end
end
if verdict == 'go' then
  redis.call('SET', KEYS[1], 'running:' .. (now + tonumber(ARGV[7])), 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], verdict, 'PX', ARGV[4])
end
if verdict == 'go' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', tonumber(ARGV[2]) + 86400000)
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], 2 * 86400000)
end
return {verdict, ''}
"""


_RENEW_CLAIM = """
-- Extend a running claim; a completed incident stays completed.
local previous = redis.call('GET', KEYS[1])
if previous and string.sub(previous, 1, 8) == 'running:' then
  redis.call('SET', KEYS[1], 'running:' .. ARGV[1], 'KEEPTTL')
end
return 0
"""


class RollbackLedger(abc.ABC):
    """Decisions, healthy versions, the audit stream and decision counters."""

    @abc.abstractmethod
    def decide(
        self,
        *,
        namespace: str,
        model: str,
        incident: str,
        now_ms: int,
        has_target: bool,
        policy: DecisionPolicy,
    ) -> Verdict:
        """Decide an incident atomically (see the module docstring)."""

    @abc.abstractmethod
    def renew_claim(self, *, namespace: str, model: str, incident: str, until_ms: int) -> None:
        """Extend a running incident's claim (before each action attempt)."""

    @abc.abstractmethod
    def action_done(self, *, namespace: str, model: str, incident: str, action: str) -> None:
        """Record that one action of the incident succeeded."""

    @abc.abstractmethod
    def actions_done(self, *, namespace: str, model: str, incident: str) -> set[str]:
        """The actions of the incident that already succeeded (a resumed incident skips them)."""

    @abc.abstractmethod
    def complete(self, *, namespace: str, model: str, incident: str, outcome: str) -> None:
        """Close a running incident with its outcome; it is never handed out again."""

    @abc.abstractmethod
    def mark_healthy(self, model: str, versions: set[str], now_ms: int) -> None:
        """Record that ``versions`` of ``model`` were healthy at ``now_ms``."""

    @abc.abstractmethod
    def healthy(self, model: str) -> dict[str, int]:
        """When each version of ``model`` was last healthy (ms)."""

    @abc.abstractmethod
    def audit(self, entry: Mapping[str, Any]) -> None:
        """Append one decision to the audit stream and count it."""

    @abc.abstractmethod
    def audit_entries(self, count: int = 1000) -> list[dict[str, str]]:
        """The newest ``count`` audit entries, oldest first."""

    @abc.abstractmethod
    def decision_counts(self) -> dict[tuple[str, str, str], int]:
        """Decisions counted so far per ``(model, rule, decision)``."""

    @abc.abstractmethod
    def claim_delivery(self, fingerprint: str, starts_at: str, ttl_s: int) -> bool:
        """True the first time an Alertmanager alert (fingerprint, start) is seen."""

    @abc.abstractmethod
    def release_delivery(self, fingerprint: str, starts_at: str) -> None:
        """Forget a claimed delivery whose handling failed, so the re-send is handled."""

    @abc.abstractmethod
    def count_webhook(self, outcome: str) -> None:
        """Count one alert the webhook receiver handled, by outcome."""

    @abc.abstractmethod
    def webhook_counts(self) -> dict[str, int]:
        """Alerts the webhook receivers handled, by outcome."""

    @abc.abstractmethod
    def count_webhook_refusal(self, status: int) -> None:
        """Count one request a webhook receiver refused, by HTTP status."""

    @abc.abstractmethod
    def webhook_refusals(self) -> dict[int, int]:
        """Requests the webhook receivers refused, by HTTP status."""


def _flatten(entry: Mapping[str, Any]) -> dict[str, str]:
    flat = {}
    for name, value in entry.items():
        if value is None:
            continue
        if isinstance(value, str):
            flat[name] = value
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            flat[name] = repr(value)
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


class RedisRollbackLedger(RollbackLedger):
    def __init__(
        self, client: redis.Redis, keys: AlertingKeys | None = None, audit_max: int = 100_000
    ) -> None:
        self.client = client
        self.keys = keys or AlertingKeys()
        self.audit_max = audit_max
        self._decide = client.register_script(_DECIDE)
        self._renew = client.register_script(_RENEW_CLAIM)

    def decide(
        self,
        *,
        namespace: str,
        model: str,
        incident: str,
        now_ms: int,
        has_target: bool,
        policy: DecisionPolicy,
    ) -> Verdict:
        keys = [
            self.keys.incident(namespace, model, incident),
            self.keys.last_rollback(namespace, model),
            self.keys.rollbacks(namespace, model),
        ]
        arguments: list[str | int] = [
            now_ms,
            policy.cooldown_ms,
            policy.max_per_day,
            policy.incident_ttl_ms,
            int(has_target),
            incident,
            policy.claim_ms,
        ]
        verdict, _ = self._decide(keys=keys, args=arguments)
        return _verdict(verdict)

    def renew_claim(self, *, namespace: str, model: str, incident: str, until_ms: int) -> None:
        key = self.keys.incident(namespace, model, incident)
        self._renew(keys=[key], args=[until_ms])

    def action_done(self, *, namespace: str, model: str, incident: str, action: str) -> None:
        key = self.keys.incident_actions(namespace, model, incident)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(key, action)
        pipe.pexpire(key, 2 * DAY_MS)
        pipe.execute()

    def actions_done(self, *, namespace: str, model: str, incident: str) -> set[str]:
        key = self.keys.incident_actions(namespace, model, incident)
        return {str(action) for action in self.client.smembers(key)}

    def complete(self, *, namespace: str, model: str, incident: str, outcome: str) -> None:
        self.client.set(self.keys.incident(namespace, model, incident), outcome, keepttl=True)

    def mark_healthy(self, model: str, versions: set[str], now_ms: int) -> None:
        if versions:
            self.client.hset(self.keys.healthy(model), mapping=dict.fromkeys(versions, now_ms))

    def healthy(self, model: str) -> dict[str, int]:
        stored = self.client.hgetall(self.keys.healthy(model))
        return {str(version): int(at) for version, at in stored.items()}

    def audit(self, entry: Mapping[str, Any]) -> None:
        flat = _flatten(entry)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.keys.audit(), flat, maxlen=self.audit_max, approximate=True)  # type: ignore[arg-type]
        field = f"{flat.get('model', '')}|{flat.get('rule', '')}|{flat.get('decision', '')}"
        pipe.hincrby(self.keys.decisions(), field, 1)
        pipe.execute()

    def audit_entries(self, count: int = 1000) -> list[dict[str, str]]:
        newest: list[tuple[str, dict[str, str]]] = self.client.xrevrange(  # type: ignore[assignment]
            self.keys.audit(), count=count
        )
        return [{"id": str(entry_id), **fields} for entry_id, fields in reversed(newest)]

    def decision_counts(self) -> dict[tuple[str, str, str], int]:
        counts = {}
        for name, count in self.client.hgetall(self.keys.decisions()).items():
            model, rule, decision = str(name).split("|", 2)
            counts[(model, rule, decision)] = int(count)
        return counts

    def claim_delivery(self, fingerprint: str, starts_at: str, ttl_s: int) -> bool:
        key = self.keys.delivery(fingerprint, starts_at)
        return bool(self.client.set(key, "1", nx=True, ex=ttl_s))

    def release_delivery(self, fingerprint: str, starts_at: str) -> None:
        self.client.delete(self.keys.delivery(fingerprint, starts_at))

    def count_webhook(self, outcome: str) -> None:
        self.client.hincrby(self.keys.webhook_outcomes(), outcome, 1)

    def webhook_counts(self) -> dict[str, int]:
        stored = self.client.hgetall(self.keys.webhook_outcomes())
        return {str(outcome): int(count) for outcome, count in stored.items()}

    def count_webhook_refusal(self, status: int) -> None:
        self.client.hincrby(self.keys.webhook_refusals(), str(status), 1)

    def webhook_refusals(self) -> dict[int, int]:
        stored = self.client.hgetall(self.keys.webhook_refusals())
        return {int(status): int(count) for status, count in stored.items()}


def _verdict(value: object) -> Verdict:
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text in ("go", "resume", "duplicate", "no_target", "cooldown", "daily_cap"):
        return text  # type: ignore[return-value]
    raise RuntimeError(f"unexpected rollback verdict {text!r}")


class MemoryRollbackLedger(RollbackLedger):
    """The same decisions in one process (backtest, and anything replaying history)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incidents: dict[tuple[str, str, str], str] = {}
        self._last_rollback_ms: dict[tuple[str, str], int] = {}
        self._rollbacks: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._healthy: dict[str, dict[str, int]] = defaultdict(dict)
        self._audit: list[dict[str, str]] = []
        self._decisions: dict[tuple[str, str, str], int] = defaultdict(int)
        self._deliveries: set[tuple[str, str]] = set()
        self._webhook: dict[str, int] = defaultdict(int)
        self._webhook_refusals: dict[int, int] = defaultdict(int)
        self._claims: dict[tuple[str, str, str], int] = {}
        self._actions_done: dict[tuple[str, str, str], set[str]] = defaultdict(set)

    def decide(
        self,
        *,
        namespace: str,
        model: str,
        incident: str,
        now_ms: int,
        has_target: bool,
        policy: DecisionPolicy,
    ) -> Verdict:
        with self._lock:
            key = (namespace, model, incident)
            if key in self._incidents:
                claimed_until = self._claims.get(key)
                if claimed_until is not None and now_ms >= claimed_until:
                    self._claims[key] = now_ms + policy.claim_ms
                    return "resume"
                return "duplicate"
            last = self._last_rollback_ms.get((namespace, model))
            recent = [at for at in self._rollbacks[(namespace, model)] if at > now_ms - DAY_MS]
            self._rollbacks[(namespace, model)] = recent
            verdict: Verdict
            if not has_target:
                verdict = "no_target"
            elif last is not None and now_ms - last < policy.cooldown_ms:
                verdict = "cooldown"
            elif len(recent) >= policy.max_per_day:
                verdict = "daily_cap"
            else:
                verdict = "go"
                self._last_rollback_ms[(namespace, model)] = now_ms
                recent.append(now_ms)
                self._claims[key] = now_ms + policy.claim_ms
            self._incidents[key] = verdict
            return verdict

    def renew_claim(self, *, namespace: str, model: str, incident: str, until_ms: int) -> None:
        with self._lock:
            if (namespace, model, incident) in self._claims:
                self._claims[(namespace, model, incident)] = until_ms

    def action_done(self, *, namespace: str, model: str, incident: str, action: str) -> None:
        with self._lock:
            self._actions_done[(namespace, model, incident)].add(action)

    def actions_done(self, *, namespace: str, model: str, incident: str) -> set[str]:
        with self._lock:
            return set(self._actions_done.get((namespace, model, incident), set()))

    def complete(self, *, namespace: str, model: str, incident: str, outcome: str) -> None:
        with self._lock:
            self._claims.pop((namespace, model, incident), None)
            self._incidents[(namespace, model, incident)] = outcome

    def mark_healthy(self, model: str, versions: set[str], now_ms: int) -> None:
        with self._lock:
            self._healthy[model].update(dict.fromkeys(versions, now_ms))

    def healthy(self, model: str) -> dict[str, int]:
        with self._lock:
            return dict(self._healthy.get(model, {}))

    def audit(self, entry: Mapping[str, Any]) -> None:
        flat = _flatten(entry)
        with self._lock:
            self._audit.append({"id": str(len(self._audit)), **flat})
            key = (flat.get("model", ""), flat.get("rule", ""), flat.get("decision", ""))
            self._decisions[key] += 1

    def audit_entries(self, count: int = 1000) -> list[dict[str, str]]:
        with self._lock:
            return [dict(entry) for entry in self._audit[-count:]]

    def decision_counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._decisions)

    def claim_delivery(self, fingerprint: str, starts_at: str, ttl_s: int) -> bool:
        with self._lock:
            if (fingerprint, starts_at) in self._deliveries:
                return False
            self._deliveries.add((fingerprint, starts_at))
            return True

    def release_delivery(self, fingerprint: str, starts_at: str) -> None:
        with self._lock:
            self._deliveries.discard((fingerprint, starts_at))

    def count_webhook(self, outcome: str) -> None:
        with self._lock:
            self._webhook[outcome] += 1

    def webhook_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._webhook)

    def count_webhook_refusal(self, status: int) -> None:
        with self._lock:
            self._webhook_refusals[status] += 1

    def webhook_refusals(self) -> dict[int, int]:
        with self._lock:
            return dict(self._webhook_refusals)
