"""Errors of the consumer side."""

from __future__ import annotations

__all__ = ["StoreStateLost"]


class StoreStateLost(RuntimeError):
    """The window store's checkpoints went backwards: its data was lost (Redis restarted empty).

    The runtime must rebuild: drop what it cached, seek every owned partition back one long window
    and replay, without committing the batch that found the loss.
    """
