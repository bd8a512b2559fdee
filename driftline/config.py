"""One YAML configuration file, validated with pydantic.

Every error names the key (as a dotted path, e.g. ``models.fraud.features.amount``) and the bad
value, and no process starts half-configured: :func:`load_config` either returns a complete
:class:`Config` or raises :class:`ConfigError`.
"""

from __future__ import annotations

import enum
import os
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import pydantic
import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from driftline.alerting_config import AlertingConfig, RuleList
from driftline.drift_config import DriftConfig
from driftline.quality_config import ModelLabelsConfig, QualityConfig
from driftline.rollout_config import RolloutConfig
from driftline.strict_config import StrictConfig

__all__ = [
    "Config",
    "ConfigError",
    "FeatureType",
    "KafkaConfig",
    "ModelConfig",
    "RedisConfig",
    "TopicsConfig",
    "WindowsConfig",
    "load_config",
    "parse_config",
]


MAXIMUM_WINDOW_SECONDS = 31 * 86_400
"""A month: a window is read bucket by bucket (rollups past the short window), so a year-long one
would read half a million rollups a tick."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every bad key and value."""


class KafkaConfig(StrictConfig):
    bootstrap_servers: str = Field("127.0.0.1:19092", min_length=1)
    # An empty group aborts the process inside librdkafka (a failed assertion, no exception).
    group_id: str = Field("driftline", min_length=1)
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description=(
            "librdkafka settings for every client, passed through (SASL, TLS, ...); commands that"
            " build Kafka clients check all three mappings at start and name a refused setting."
        ),
    )
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="librdkafka settings for consumers only."
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="librdkafka settings for producers only."
    )


class RedisConfig(StrictConfig):
    url: str = "redis://127.0.0.1:16379/0"
    key_prefix: str = Field("dl", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None


class TopicsConfig(StrictConfig):
    events: str = "driftline.events"
    labels: str = "driftline.labels"
    dead_letter: str = "driftline.dead-letter"
    control: str = "driftline.control"


class WindowsConfig(StrictConfig):
    """Time buckets and the sliding windows built from them (all in seconds)."""

    bucket_seconds: int = Field(10, ge=1, le=3600)
    rollup_seconds: int = Field(60, ge=1, le=86400)
    short_seconds: int = Field(300, ge=1, le=MAXIMUM_WINDOW_SECONDS)
    long_seconds: int = Field(3600, ge=1, le=MAXIMUM_WINDOW_SECONDS)

    @model_validator(mode="after")
    def _check_alignment(self) -> Self:
        if self.rollup_seconds % self.bucket_seconds:
            raise ValueError(
                f"rollup_seconds ({self.rollup_seconds}) must be a multiple of "
                f"bucket_seconds ({self.bucket_seconds})"
            )
        for name in ("short_seconds", "long_seconds"):
            value = getattr(self, name)
            if value % self.bucket_seconds:
                raise ValueError(
                    f"{name} ({value}) must be a multiple of bucket_seconds ({self.bucket_seconds})"
                )
        if self.long_seconds < self.short_seconds:
            raise ValueError(
                f"long_seconds ({self.long_seconds}) must be >= "
                f"short_seconds ({self.short_seconds})"
            )
        return self


class ConsumerConfig(StrictConfig):
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    poll_timeout_seconds: float = Field(0.5, gt=0, le=60)
    max_event_bytes: int = Field(64 * 1024, ge=256)
    late_tolerance_seconds: int = Field(
        0,
        ge=0,
        description="Extra seconds past the long window within which late events still count.",
    )
    future_tolerance_seconds: int = Field(
        300, ge=0, description="Events stamped further ahead of the consumer's clock are refused."
    )


class EvaluatorConfig(StrictConfig):
    tick_seconds: float = Field(5.0, gt=0, le=3600)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(18000, ge=0, le=65535)
    max_series: int = Field(
        2000, ge=1, description="Cap on exported label sets per metric; the rest is counted."
    )
    lease_ttl_seconds: float = Field(
        15.0,
        gt=0,
        description="One evaluator is active; a standby takes over this long after it stops.",
    )


class MonitoringConfig(StrictConfig):
    low_confidence_threshold: float = Field(0.5, ge=0, le=1)
    latency_relative_accuracy: float = Field(0.01, gt=0, lt=0.5)
    confidence_bins: int = Field(20, ge=2, le=1000)
    accept_unknown_models: bool = True
    max_models: int = Field(100, ge=1)
    max_versions_per_model: int = Field(20, ge=1)
    max_segment_values: int = Field(20, ge=1)


class FeatureType(enum.StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class ModelConfig(StrictConfig):
    features: dict[str, FeatureType] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list, max_length=8)
    stable_version: str | None = None
    labels: ModelLabelsConfig | None = None


class Config(StrictConfig):
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    topics: TopicsConfig = TopicsConfig()
    windows: WindowsConfig = WindowsConfig()
    consumer: ConsumerConfig = ConsumerConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    rules: RuleList = Field(default_factory=list)
    alerting: AlertingConfig = AlertingConfig()
    drift: DriftConfig = Field(default_factory=DriftConfig, validate_default=True)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    @field_validator("drift")
    @classmethod
    def _fit_fast_window(cls, drift: DriftConfig, info: ValidationInfo) -> DriftConfig:
        windows = info.data.get("windows")  # absent when the windows section itself is invalid
        return drift if windows is None else drift.fitted_to(windows)

    def model(self, name: str) -> ModelConfig:
        """The model's configuration; an unconfigured model gets the defaults."""
        return self.models.get(name) or ModelConfig()


def parse_config(data: Mapping[str, Any] | None, *, source: str = "config") -> Config:
    """Validate an already-parsed mapping; raise :class:`ConfigError` naming each bad key."""
    try:
        return Config.model_validate(data or {})
    except pydantic.ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a YAML config file; ``None`` means all defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read config: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source}: not UTF-8: {error}") from None
    try:
        data = _UniqueKeyLoader.read(text, source)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    return parse_config(data, source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping.

    YAML keeps the last of two equal keys, so a second ``rules:`` further down a long file would
    silently drop every rule of the first. Keys brought in by a merge (``<<: *defaults``) may
    still be overridden: that is what merging is for.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # an unhashable key is refused by the base class with its own message
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    @classmethod
    def read(cls, text: str, source: str) -> Any:
        """The document in ``text``; its errors' marks name ``source``, not "<unicode string>"."""
        loader = cls(text)
        loader.name = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _key_part(part: str | int) -> str:
    """A key as written in YAML; odd ones (spaces, control characters) quoted so they show."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]+", text) else repr(text)


# A bad value is shown in part: YAML aliases can nest a value far larger than its file (nine
# levels of nine aliases spell out 387 million strings).
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist = 3, 6, 6
_SHOWN.maxstring = _SHOWN.maxother = 120


def _describe(error: pydantic.ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid setting(s)"]
    for item in error.errors():
        key = ".".join(_key_part(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key} = {_SHOWN.repr(item.get('input'))}: {message}")
    return "\n".join(lines)
