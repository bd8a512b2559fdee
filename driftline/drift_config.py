"""The ``drift:`` section of the config: how references are built and drift is decided.

The decision fields mirror :class:`detectors.drift_decision.DriftPolicy` and are checked by
building one when the config loads, so a bad combination (a distance statistic without a
threshold, a threshold a bounded distance can never reach, ...) is refused at start-up with the
key and value named, never at the first tick.

Defaults, and why (measured by ``bench/detection.py`` and ``tests/unit/test_backtest.py``):

* the chi-square p-value under Benjamini-Hochberg at a 1 % false discovery rate, *and* a PSI
  floor of 0.1: the p-value alone flags differences far too small to matter once a window holds
  thousands of events; the floor alone flags the noise of small windows;
* at least 500 samples per window, below which a feature is "no data", never "drifted";
* any window may raise drift (``require_both_windows: false``): waiting for a one-hour long
  window to agree delays a half-standard-deviation shift from 20 s to 38 minutes, while at
  1,000 events/s the fast and short windows raise no false alarm in a simulated day. A feature
  stays drifted until every window has cleared, so the long window still damps flapping;
* a third, fast window of 30 s (``fast_window_seconds``), read from the short window's buckets,
  raises drift like the short one: a 0.5 sd shift is reported after 20 s instead of 190 s, as it
  no longer waits for most of a 5-minute window to fill. It is judged by the same test and
  floor, and the PSI floor rises where a window is thin (``psi_noise_tail_probability``), so the
  fast window does not cry wolf at low traffic either (0 alarms in a day at 25 events/s, 4
  without the noise floor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from driftline.strict_config import StrictConfig

if TYPE_CHECKING:
    from detectors.sequential_detector import SequentialPolicy
    from driftline.config import WindowsConfig

__all__ = ["DriftConfig", "DriftModelConfig", "SequentialConfig", "StatisticName"]

StatisticName = Literal[
    "psi",
    "jensen_shannon",
    "hellinger",
    "chi_square_p_value",
    "kolmogorov_smirnov",
    "wasserstein",
]


class DriftModelConfig(StrictConfig):
    """Per-model settings under ``drift.models.<model>``."""

    per_feature_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Feature -> threshold of the distance statistic, for this model only; "
        "wins over drift.per_feature_thresholds.",
    )


class SequentialConfig(StrictConfig):
    """``drift.sequential``: the per-value test beside the windows
    (``detectors.sequential_detector``)."""

    enabled: bool = Field(
        True,
        description="Run the per-value sequential test on the numeric features whose reference "
        "has its table (references built from events by baseline build).",
    )
    false_alarms_per_day: float = Field(
        1.0,
        ge=1e-6,
        le=86_400,
        description="False-alarm budget of one series, over all its features.",
    )
    events_per_second: float = Field(
        1000.0,
        ge=1e-3,
        le=1e9,
        description="The least traffic of one series the thresholds assume. A series measured "
        "busier (over about the last hour of event time) gets the thresholds of its own traffic, "
        "so the budget holds at any traffic; they grow with its logarithm.",
    )
    hold_seconds: int = Field(
        300,
        ge=1,
        description="How long an alarm keeps its feature drifted; the windows keep a lasting "
        "change drifted after that.",
    )


class DriftConfig(StrictConfig):
    statistic: StatisticName = "chi_square_p_value"
    threshold: float | None = Field(
        None, description="Threshold of a distance statistic; must stay unset for a p-value."
    )
    effect_size_statistic: StatisticName | None = "psi"
    effect_size_threshold: float = 0.1
    minimum_samples: int = Field(500, ge=1)
    false_discovery_rate: float = Field(0.01, gt=0, lt=1)
    require_both_windows: bool = False
    fast_window_seconds: int = Field(
        30,
        ge=0,
        description="A third drift window, judged with the short and long ones: a multiple of "
        "windows.bucket_seconds shorter than windows.short_seconds; 0 disables it, and so does "
        "a value that does not fit the windows.",
    )
    psi_noise_tail_probability: float | None = Field(
        1e-9,
        gt=0,
        lt=1,
        description="In a window of n samples the PSI floor rises to the PSI that n draws from "
        "the reference itself exceed with this probability (thin windows cannot raise drift); "
        "null keeps the floor fixed.",
    )
    per_feature_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Feature -> threshold of the distance statistic, for every model that has "
        "the feature in its reference.",
    )
    models: dict[str, DriftModelConfig] = Field(default_factory=dict)
    bins: int = Field(20, ge=2, le=200, description="Quantile bins of a numeric feature.")
    top_k: int = Field(20, ge=1, le=200, description="Categories kept per categorical feature.")
    max_features: int = Field(
        100, ge=1, le=512, description="Features a reference keeps (the most frequent ones)."
    )
    reference_refresh_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often consumers and evaluators re-read references."
    )
    sequential: SequentialConfig = Field(default_factory=SequentialConfig)

    @model_validator(mode="after")
    def _check_policy(self) -> Self:
        from detectors.drift_decision import DriftPolicy
        from detectors.drift_statistics import DriftStatistic

        thresholds = dict(self.per_feature_thresholds)
        for settings in self.models.values():
            thresholds.update(settings.per_feature_thresholds)
        DriftPolicy(
            statistic=DriftStatistic(self.statistic),
            threshold=self.threshold,
            effect_size_statistic=(
                None
                if self.effect_size_statistic is None
                else DriftStatistic(self.effect_size_statistic)
            ),
            effect_size_threshold=self.effect_size_threshold,
            minimum_samples=self.minimum_samples,
            false_discovery_rate=self.false_discovery_rate,
            require_both_windows=self.require_both_windows,
            per_feature_thresholds=thresholds,
            psi_noise_tail_probability=self.psi_noise_tail_probability,
        )
        return self

    def fitted_to(self, windows: WindowsConfig) -> Self:
        """This section with its fast window fitted to ``windows`` (``Config`` calls it).

        A fast window that is not a multiple of ``bucket_seconds`` shorter than
        ``short_seconds`` is turned off (0), never an error: a config written back with all its
        defaults (``model_dump``) must load again under any windows.
        """
        seconds = self.fast_window_seconds
        if seconds == 0 or (
            seconds % windows.bucket_seconds == 0 and seconds < windows.short_seconds
        ):
            return self
        return self.model_copy(update={"fast_window_seconds": 0})

    def sequential_policy(self) -> SequentialPolicy | None:
        """The sequential test's policy, ``None`` when it is off."""
        from detectors.sequential_detector import SequentialPolicy

        settings = self.sequential
        if not settings.enabled:
            return None
        return SequentialPolicy(
            false_alarms_per_day=settings.false_alarms_per_day,
            events_per_second=settings.events_per_second,
            hold_ms=settings.hold_seconds * 1000,
        )

    def thresholds_for(self, model: str) -> dict[str, float]:
        """Per-feature thresholds of ``model``: the global ones, then the model's own."""
        thresholds = dict(self.per_feature_thresholds)
        model_settings = self.models.get(model)
        if model_settings is not None:
            thresholds.update(model_settings.per_feature_thresholds)
        return thresholds
