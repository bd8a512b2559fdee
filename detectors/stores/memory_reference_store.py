"""References in process memory: for ``backtest`` (one reference from a file) and unit tests."""

from __future__ import annotations

from detectors.reference import Reference
from detectors.reference_store import ReferenceStore

__all__ = ["MemoryReferenceStore"]


class MemoryReferenceStore(ReferenceStore):
    def __init__(self, references: tuple[Reference, ...] = ()) -> None:
        self._references = {reference.model: reference for reference in references}

    def save(self, reference: Reference) -> None:
        self._references[reference.model] = reference

    def load(self, model: str) -> Reference | None:
        return self._references.get(model)

    def reference_id(self, model: str) -> str | None:
        found = self._references.get(model)
        return None if found is None else found.reference_id

    def delete(self, model: str) -> bool:
        return self._references.pop(model, None) is not None
