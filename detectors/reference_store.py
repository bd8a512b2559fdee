"""Where references live: one interface, two backends (``stores/redis_reference_store``,
``stores/memory_reference_store``).

Lifecycle and guarantees every backend keeps:

1. :meth:`ReferenceStore.save` replaces a model's reference in one atomic write (id and document
   together), so a reader never sees the id of one reference with the body of another.
2. :meth:`ReferenceStore.reference_id` is cheap: consumers and evaluators poll it (see
   ``detectors.reference_cache``) and load the whole document only when the id changed.
3. A model has at most one reference; every version, deployment and segment of the model is
   compared with it.
"""

from __future__ import annotations

import abc

from detectors.reference import Reference

__all__ = ["ReferenceStore"]


class ReferenceStore(abc.ABC):
    @abc.abstractmethod
    def save(self, reference: Reference) -> None:
        """Make ``reference`` its model's reference, replacing any previous one."""

    @abc.abstractmethod
    def load(self, model: str) -> Reference | None:
        """The model's reference, or ``None`` when it has none."""

    @abc.abstractmethod
    def reference_id(self, model: str) -> str | None:
        """The id of the model's reference, without loading it."""

    @abc.abstractmethod
    def delete(self, model: str) -> bool:
        """Remove the model's reference; true when there was one."""
