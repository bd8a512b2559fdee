"""A process's copy of the models' references, refreshed from the reference store.

Consumers ask for a model's binner on every batch and evaluators for its reference on every
tick, so answers come from memory. Lifecycle:

1. The first request for a model loads its reference from the store (``None`` when it has none).
2. Later requests answer from memory until the entry is ``refresh_seconds`` old; the next request
   then polls the store for the reference id (one small read) and reloads the document only when
   the id changed. A new reference therefore reaches every process within ``refresh_seconds``.
3. A document that fails to parse is logged once and treated as no reference: the model is still
   monitored for latency, confidence and errors.
4. Store errors propagate: the consumer retries its batch and the evaluator its tick, as for any
   other store error.

>>> from detectors.stores.memory_reference_store import MemoryReferenceStore
>>> seconds = [0.0]
>>> cache = ReferenceCache(MemoryReferenceStore(), refresh_seconds=30, clock_s=lambda: seconds[0])
>>> cache.binner_for("fraud") is None
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from detectors.reference import Reference, ReferenceFormatError
from detectors.reference_store import ReferenceStore

__all__ = ["ReferenceCache"]

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    reference: Reference | None
    reference_id: str | None
    checked_at_s: float


class ReferenceCache:
    """Answers ``reference(model)`` and ``binner_for(model)`` from memory; see the module doc."""

    def __init__(
        self,
        store: ReferenceStore,
        refresh_seconds: float = 30.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_seconds > 0:
            raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds!r}")
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock_s = clock_s
        self._entries: dict[str, _Entry] = {}
        self._refused_ids: set[str] = set()

    def reference(self, model: str) -> Reference | None:
        now_s = self.clock_s()
        entry = self._entries.get(model)
        if entry is None:
            entry = self._entries[model] = self._load(model, now_s)
        elif now_s - entry.checked_at_s >= self.refresh_seconds:
            current_id = self.store.reference_id(model)
            if current_id != entry.reference_id:
                entry = self._entries[model] = self._load(model, now_s)
            else:
                entry.checked_at_s = now_s
        return entry.reference

    def binner_for(self, model: str) -> Reference | None:
        """The ``feature_binner_for`` hook of the consumer: a reference bins its own features."""
        return self.reference(model)

    def _load(self, model: str, now_s: float) -> _Entry:
        try:
            reference = self.store.load(model)
        except ReferenceFormatError as error:
            current_id = self.store.reference_id(model)
            if current_id not in self._refused_ids:
                self._refused_ids.add(str(current_id))
                log.error("model %s: stored reference %s is unusable: %s", model, current_id, error)
            return _Entry(None, current_id, now_s)
        if reference is None:
            return _Entry(None, None, now_s)
        if reference.model != model:
            log.error(
                "model %s: stored reference %s belongs to model %s; ignored",
                model,
                reference.reference_id,
                reference.model,
            )
            return _Entry(None, reference.reference_id, now_s)
        log.info("model %s: using reference %s", model, reference.reference_id)
        return _Entry(reference, reference.reference_id, now_s)
