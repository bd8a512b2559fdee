"""Errors of the consumer side."""

from __future__ import annotations

__all__ = ["StorePositionsPastTheEnd", "StoreStateInconsistent", "StoreStateLost"]


class StorePositionsPastTheEnd(RuntimeError):
    """The store has applied offsets a partition never reached: the topic was recreated, or the
    consumer reads another Kafka cluster than the one the store was filled from. Every new event
    below those offsets would count as already applied, so the consumer stops, applying nothing.
    """


class StoreStateInconsistent(RuntimeError):
    """The store keeps refusing a batch as applied elsewhere, yet its checkpoints cover none of
    it: the stored state contradicts itself (a key edited, or restored from another time, by
    hand). Retrying cannot help, so the consumer stops without committing the batch.
    """


class StoreStateLost(RuntimeError):
    """The window store's checkpoints went backwards: its data was lost (Redis restarted empty).

    The runtime must rebuild: drop what it cached, seek every owned partition back one long window
    and replay, without committing the batch that found the loss.
    """
