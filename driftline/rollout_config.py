"""The ``rollout:`` section: the gate judging each step of a gradual rollout (``driftline gate``).

Per model (``rollout.models.<model>``) a :class:`RolloutPolicy` says what evidence a step needs
(minimum events and labels on each side, minimum observation time, optionally per step) and what
counts as a regression (:class:`RolloutCheck`: "precision more than 2 points below the baseline,
significantly", "p99 latency more than 20 % above", "drift share above the baseline's by 0.2",
"shadow agrees with stable on less than 95 % of the same inputs") and which alert rules gate a
step. A model without a policy gets the defaults below. See docs/rollout-gate.md.

Defaults, and why:

* ``minimum_events`` 1,000 per side: a two-proportion test on an error ratio of 1 % then detects
  a doubling at p < 0.01 about half of the time; below it the gate holds rather than guesses.
* ``minimum_labelled`` 200 per side for quality checks: the Wilson interval of a precision of 0.9
  over 200 labels is about +-0.04, the order of the regressions worth rolling back.
* ``minimum_observation_seconds`` 600: a candidate must have served for ten minutes of the window
  (one cold start, one cache warm-up, one batch job, are not a verdict).
* ``significance`` 0.01: a gate is asked every minute, several checks at a time; 0.05 per check
  would roll good candidates back every few rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

from pydantic import Field, model_validator

from driftline.alerting_config import Duration
from driftline.strict_config import StrictConfig

__all__ = [
    "PROPORTION_FIGURES",
    "CheckFigure",
    "Minimums",
    "RolloutCheck",
    "RolloutConfig",
    "RolloutPolicy",
    "RolloutStep",
]


CheckFigure = Literal[
    "accuracy",
    "precision",
    "recall",
    "error_ratio",
    "low_confidence_ratio",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "drift_share",
    "agreement",
]

HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall"})
LOWER_IS_BETTER = frozenset({"error_ratio", "low_confidence_ratio"})
PROPORTION_FIGURES = HIGHER_IS_BETTER | LOWER_IS_BETTER
"""Figures compared with the two-proportion z-test (``detectors.quality_statistics``)."""
LABEL_FIGURES = HIGHER_IS_BETTER
LATENCY_QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}

# Which tolerance each figure takes: the one field that must be set.
_TOLERANCE_OF = {
    **dict.fromkeys(HIGHER_IS_BETTER, "max_drop"),
    **dict.fromkeys(LOWER_IS_BETTER, "max_rise"),
    **dict.fromkeys(LATENCY_QUANTILES, "max_ratio"),
    "drift_share": "max_rise",
    "agreement": "min_value",
}
_TOLERANCES = ("max_drop", "max_rise", "max_ratio", "min_value")


class RolloutCheck(StrictConfig):
    """One comparison of the candidate with the baseline; a regression rolls the candidate back.

    * ``accuracy``, ``precision``, ``recall`` (labels; ``class`` for the last two): ``max_drop``,
      the points the candidate may lose against the baseline;
    * ``error_ratio``, ``low_confidence_ratio``: ``max_rise``, the points it may gain;
    * ``latency_p50|p95|p99``: ``max_ratio``, candidate over baseline (1.2: "20 % slower");
    * ``drift_share``: ``max_rise`` over the baseline's drift share (needs a drift reference);
    * ``agreement`` (shadow): ``min_value``, the share of the same inputs (joined by event_id) on
      which the candidate predicted what the baseline did; a canary candidate is not judged on it.

    A proportion beyond its tolerance is a regression only when significant: the pooled
    two-proportion z-test (agreement: the Wilson interval's upper bound) at ``significance``
    (default: the policy's). Latency and drift share are compared as they are.
    """

    figure: CheckFigure
    positive_class: str | None = Field(None, alias="class")
    max_drop: float | None = Field(None, ge=0, le=1)
    max_rise: float | None = Field(None, ge=0, le=1)
    max_ratio: float | None = Field(None, ge=1)
    min_value: float | None = Field(None, ge=0, le=1)
    significance: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        wanted = _TOLERANCE_OF[self.figure]
        if getattr(self, wanted) is None:
            raise ValueError(f"figure {self.figure!r} needs {wanted}")
        extra = [name for name in _TOLERANCES if name != wanted and getattr(self, name) is not None]
        if extra:
            raise ValueError(f"figure {self.figure!r} takes {wanted}, not {', '.join(extra)}")
        needs_class = self.figure in ("precision", "recall")
        if needs_class != (self.positive_class is not None):
            raise ValueError(
                f"figure {self.figure!r} "
                + ("needs a class (a positive class)" if needs_class else "has no class")
            )
        return self

    @property
    def name(self) -> str:
        """``precision@fraud``, ``latency_p99``: how reasons name the check."""
        suffix = f"@{self.positive_class}" if self.positive_class is not None else ""
        return f"{self.figure}{suffix}"


class RolloutStep(StrictConfig):
    """Evidence a named step needs (``step=`` of the verdict request), instead of the policy's."""

    minimum_events: int | None = Field(None, ge=1)
    minimum_labelled: int | None = Field(None, ge=1)
    minimum_observation_seconds: Duration | None = None
    minimum_pairs: int | None = Field(None, ge=1)


def _default_checks() -> list[RolloutCheck]:
    return [
        RolloutCheck(figure="error_ratio", max_rise=0.01),
        RolloutCheck(figure="latency_p99", max_ratio=1.2),
        RolloutCheck(figure="low_confidence_ratio", max_rise=0.05),
    ]


class RolloutPolicy(StrictConfig):
    """``rollout.models.<model>``: what a step of this model's rollouts needs, and what fails it."""

    window: Literal["short", "long"] = Field(
        "long", description="The window the evidence is read from."
    )
    minimum_events: int = Field(1000, ge=1, description="Events on each side.")
    minimum_labelled: int = Field(
        200, ge=1, description="Labelled predictions on each side, for label checks."
    )
    minimum_observation_seconds: Duration = Field(
        600.0, description="How long of the window the candidate must have served."
    )
    minimum_pairs: int = Field(
        500, ge=1, description="Shadow: inputs both versions answered, for agreement."
    )
    significance: float = Field(0.01, gt=0, lt=1)
    checks: list[RolloutCheck] = Field(default_factory=_default_checks, max_length=50)
    rules: list[str] = Field(
        default_factory=list,
        description="Alert rules (names in rules:) gating a step: firing for the candidate rolls "
        "it back, pending holds it.",
    )
    steps: dict[str, RolloutStep] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        names = [check.name for check in self.checks]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"checks repeat {duplicated}")
        return self

    def minimums(self, step: str | None) -> Minimums:
        """The evidence needed at ``step`` (unknown steps are refused before this is asked)."""
        override = self.steps.get(step) if step is not None else None
        if override is None:
            override = RolloutStep()
        return Minimums(
            events=override.minimum_events or self.minimum_events,
            labelled=override.minimum_labelled or self.minimum_labelled,
            observation_seconds=(
                self.minimum_observation_seconds
                if override.minimum_observation_seconds is None
                else override.minimum_observation_seconds
            ),
            pairs=override.minimum_pairs or self.minimum_pairs,
        )


@dataclass(frozen=True)
class Minimums:
    """The evidence one step needs, each side."""

    events: int
    labelled: int
    observation_seconds: float
    pairs: int


class RolloutConfig(StrictConfig):
    """The top-level ``rollout:`` section: the gate's listener and each model's policy.

    The gate authenticates like the webhook receiver, with the same secrets
    (``alerting.webhook.token_env`` and friends).
    """

    host: str = "127.0.0.1"
    port: int = Field(18081, ge=0, le=65535)
    max_body_bytes: int = Field(64 * 1024, ge=256, description="Flagger payloads are small.")
    models: dict[str, RolloutPolicy] = Field(default_factory=dict)

    def policy(self, model: str) -> RolloutPolicy:
        """The model's policy; a model without one gets the defaults."""
        return self.models.get(model) or RolloutPolicy()
