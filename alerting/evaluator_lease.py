"""One active evaluator per deployment: a lease in Redis, renewed every tick.

Every ``driftline evaluate`` process calls :meth:`EvaluatorLease.hold` once per tick. The holder
renews the lease; the others stay standby and take over once it expires (``ttl_ms`` after the
holder's last renewal, e.g. after a SIGKILL). Only the holder computes figures and runs alert
rules and rollbacks; standbys export just ``driftline_evaluator_leader 0``. The rule engine's
alert states live in Redis too (``alerting.alerting_step``), so a new holder continues the same
incidents: nothing fires twice, and a rollback its predecessor had not finished is retried under
the same incident key, which the rollback ledger executes at most once.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

__all__ = ["EvaluatorLease"]

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class EvaluatorLease:
    """A Redis lease under ``key``; ``holder`` defaults to host, pid and a random suffix."""

    def __init__(
        self, client: redis.Redis, key: str, ttl_ms: int, holder: str | None = None
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be > 0, got {ttl_ms!r}")
        self.key = key
        self.ttl_ms = ttl_ms
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self.held = False

    def hold(self) -> bool:
        """Renew or take the lease; true while this process is the active evaluator."""
        self.held = bool(int(self._hold(keys=[self.key], args=[self.holder, self.ttl_ms])))
        return self.held

    def release(self) -> None:
        """Give the lease up at a clean shutdown, so a standby need not wait for the TTL."""
        if self.held:
            self._release(keys=[self.key], args=[self.holder])
            self.held = False
