"""``backtest --verdict-every``: what the rollout gate would have answered at each step.

:class:`VerdictReplay` is an evaluator tick hook of :class:`~driftline.backtest.Backtest`. Every
``every_ms`` of event time it asks a :class:`~alerting.rollout_gate.RolloutGate` on the replay's
own store and clock, as Argo Rollouts or Flagger would ask the live one at each analysis interval,
about every candidate in the windows (each version serving as canary or shadow, whole traffic,
in the model's policy window), and hands ``emit`` one JSON line per answer:
``{"kind": "verdict", "at": <event time ms>, "verdict": ..., "model": ..., "candidate": ...,
"reasons": [...], "evidence": {...}}``. Alert rules gate it with the replayed engine's states.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alerting import metric_names as names
from alerting.rollout_gate import RolloutGate
from alerting.shadow_agreement import ShadowAgreement
from alerting.snapshot import Snapshot
from detectors.reference import Reference
from detectors.window_store import WindowStore
from driftline.config import Config

__all__ = ["VerdictReplay"]


class VerdictReplay:
    def __init__(
        self,
        config: Config,
        store: WindowStore,
        *,
        every_ms: int,
        emit: Callable[[str], object],
        clock_ms: Callable[[], int],
        drift_references: Callable[[str], Reference | None],
        alert_states: Callable[[], Sequence[Mapping[str, Any]]] = lambda: (),
    ) -> None:
        if every_ms < 1:
            raise ValueError(f"every_ms must be at least 1, got {every_ms!r}")
        self.config = config
        self.every_ms = every_ms
        self.emit = emit
        self.gate = RolloutGate(
            config,
            store,
            drift_references=drift_references,
            alert_states=alert_states,
            agreement=ShadowAgreement(config, store).agreement,
            clock_ms=clock_ms,
        )
        self._next_ms: int | None = None

    def after_figures(self, snapshot: Snapshot) -> None:
        at_ms = snapshot.taken_at_ms
        if self._next_ms is not None and at_ms < self._next_ms:
            return
        self._next_ms = at_ms - at_ms % self.every_ms + self.every_ms
        for model, candidate in self._candidates(snapshot):
            verdict = self.gate.verdict(model, candidate)
            line = {"kind": "verdict", "at": at_ms, **verdict.to_dict()}
            self.emit(json.dumps(line, allow_nan=False))

    def _candidates(self, snapshot: Snapshot) -> list[tuple[str, str]]:
        """(model, version) of every canary or shadow series with events in its policy window."""
        found = set()
        for sample in snapshot.samples:
            if sample.metric != names.WINDOW_EVENTS or sample.value <= 0:
                continue
            model, version, deployment, segment, window = sample.labels
            policy = self.config.rollout.policy(model)
            if deployment != "stable" and not segment and window == policy.window:
                found.add((model, version))
        return sorted(found)
