"""What every section of the config shares: the strict pydantic base, and the longest duration.

Each section lives in its own module (``alerting_config``, ``drift_config``, ...), and
``driftline.config`` imports them all, so this base lives apart from ``driftline.config`` to
spare the sections a circular import.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["TEN_YEARS_SECONDS", "StrictConfig"]

TEN_YEARS_SECONDS = 10 * 365 * 86_400
"""The longest duration any setting takes (rule durations, label horizons): longer ones are typos,
and would overflow epoch milliseconds in int64 arithmetic downstream."""


class StrictConfig(BaseModel):
    """A config section: unknown keys, inf and nan are errors, and a value is never mutated.

    A typo in a monitoring config silently disables monitoring, so unknown keys are refused; inf
    or nan would pass a bound like ``gt=0`` and fail far from the config, so numbers are finite.
    A field with an alias (``for``, because it is a Python keyword) may also be given by name.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )
