"""References in Redis: one hash per model, ``{prefix}:{model}:reference``, fields ``id``/``json``.

The key carries the model's hash tag like every other key of the model (``KeySchema``), so a
Redis Cluster keeps a model's reference on the slot of its windows.
"""

from __future__ import annotations

import redis

from detectors.reference import Reference
from detectors.reference_store import ReferenceStore
from detectors.window_store import KeySchema

__all__ = ["RedisReferenceStore"]


class RedisReferenceStore(ReferenceStore):
    def __init__(self, client: redis.Redis, keys: KeySchema | None = None) -> None:
        self.client = client
        self.keys = keys or KeySchema()

    def save(self, reference: Reference) -> None:
        # One HSET writes both fields atomically.
        self.client.hset(
            self.keys.reference(reference.model),
            mapping={"id": reference.reference_id, "json": reference.to_json()},
        )

    def load(self, model: str) -> Reference | None:
        text = self.client.hget(self.keys.reference(model), "json")
        return None if text is None else Reference.from_json(str(text))

    def reference_id(self, model: str) -> str | None:
        found = self.client.hget(self.keys.reference(model), "id")
        return None if found is None else str(found)

    def delete(self, model: str) -> bool:
        return bool(self.client.delete(self.keys.reference(model)))
