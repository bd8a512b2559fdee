"""Alert rules and the ``alerting:`` section of the config: notifiers, rollback, webhook receiver.

One rule definition serves both alerting paths: the built-in engine (``alerting.rule_engine``)
evaluates it on every evaluator tick, and ``driftline rules export`` turns it into a Prometheus
alerting rule (``alerting.rule_export``). Everything here is validated when the config loads; an
error about a rule names the rule, e.g. ``rules.canary-p99-latency.threshold``.

Durations (``for``, ``keep_firing_for``) accept seconds or Prometheus-style strings (``90s``,
``5m``, ``1h30m``). Templates (``summary``, ``description``) use ``{name}`` placeholders, rendered
by Python in the engine and translated to Go templates for Prometheus: ``{value}`` (optionally
``{value:.3f}``), ``{threshold}``, ``{rule}`` and the labels ``{model}``, ``{version}``,
``{deployment}``, ``{segment}``, ``{feature}`` and any label the rule matches on.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal, Self

import pydantic
from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from driftline.strict_config import TEN_YEARS_SECONDS, StrictConfig

__all__ = [
    "ALERT_STATES",
    "AlertingConfig",
    "AlertmanagerNotifierConfig",
    "ArgoRolloutsActionConfig",
    "KafkaControlActionConfig",
    "LogNotifierConfig",
    "RedisKeyActionConfig",
    "RelativeThreshold",
    "RollbackConfig",
    "RuleConfig",
    "RuleList",
    "WebhookActionConfig",
    "WebhookNotifierConfig",
    "WebhookReceiverConfig",
    "format_duration",
    "parse_duration",
    "template_fields",
]

AlertState = Literal["inactive", "pending", "firing", "resolved", "nodata"]
ALERT_STATES: tuple[AlertState, ...] = ("inactive", "pending", "firing", "resolved", "nodata")

# The labels every windowed driftline metric carries; a rule's alert is one per distinct set.
INSTANCE_LABELS = ("model", "version", "deployment", "segment", "feature")
# Labels the alert itself sets; a rule's extra ``labels`` may not override them.
RESERVED_LABELS = frozenset({"alertname", "severity", "action", *INSTANCE_LABELS, "window"})

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VALUE_SPEC = re.compile(r"^\.\d{1,2}[fge]$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a Prometheus duration string.

    >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration(2.5), parse_duration("0")
    (5400.0, 90.0, 2.5, 0.0)
    """
    if isinstance(value, bool):
        raise ValueError("a duration is seconds or a string like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or "".join(number + unit for number, unit in parts) != text:
                raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '90s', '5m')")
            seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    else:
        raise ValueError("a duration is seconds or a string like '5m'")
    if not 0 <= seconds <= TEN_YEARS_SECONDS:  # also refuses nan
        raise ValueError(
            f"a duration must be 0 to {TEN_YEARS_SECONDS:,} seconds (ten years), got {value!r}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A Prometheus duration string (milliseconds precision).

    >>> format_duration(5400), format_duration(3), format_duration(0.25), format_duration(0)
    ('1h30m', '3s', '250ms', '0s')
    """
    remaining = round(seconds * 1000)
    if remaining == 0:
        return "0s"
    text = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            text += f"{count}{unit}"
    return text


Duration = Annotated[float, BeforeValidator(parse_duration)]


def template_fields(template: str) -> list[tuple[str, str]]:
    """``(field, format spec)`` of each placeholder in a rule template."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if conversion:
            raise ValueError(f"placeholder {{{name}!{conversion}}}: conversions are not supported")
        fields.append((name, spec or ""))
    return fields


class RelativeThreshold(StrictConfig):
    """Compare a series with a reference series instead of (only) a constant.

    The reference is the series with the same labels except those in ``reference`` (which set
    them) and ``ignoring`` (which may differ freely): ``{deployment: stable}`` with the default
    ``ignoring: [version]`` compares each canary with the stable version of the same model,
    segment and window. ``metric`` names another metric holding the reference (for instance a
    baseline a detector exports); by default it is the rule's own metric.

    ``mode`` says what is compared with the threshold: ``ratio`` = value / reference,
    ``difference`` = value - reference, ``drop`` = reference - value (``drop > 0.05`` is "lost
    five points against the reference").
    """

    reference: dict[str, str] = Field(min_length=1)
    metric: str | None = Field(None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    ignoring: list[str] = Field(default_factory=lambda: ["version"])
    mode: Literal["ratio", "difference", "drop"] = "ratio"
    min_samples: int | None = Field(
        None, ge=0, description="Events the reference needs in its window; default: the rule's."
    )

    @model_validator(mode="after")
    def _check_labels(self) -> Self:
        _check_label_names({name: "" for name in [*self.reference, *self.ignoring]})
        if "model" in self.reference or "model" in self.ignoring:
            raise ValueError("the reference is always of the same model; do not set 'model'")
        if "window" in self.reference or "window" in self.ignoring:
            raise ValueError("the reference is always of the same window; do not set 'window'")
        return self


class RuleConfig(StrictConfig):
    """One alert rule (see docs/alerting.md for the reference and examples)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    match: dict[str, str] = Field(default_factory=dict)
    comparison: Literal[">", ">=", "<", "<="]
    threshold: float = Field(allow_inf_nan=False)
    relative: RelativeThreshold | None = None
    for_seconds: Duration = Field(0.0, alias="for")
    keep_firing_for_seconds: Duration = Field(0.0, alias="keep_firing_for")
    windows: Literal["short", "long", "both"] = "short"
    min_samples: int = Field(100, ge=0)
    samples_metric: str = Field(
        "driftline_window_events",
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="The per-series, per-window count min_samples applies to (quality rules: "
        "driftline_window_labels).",
    )
    severity: str = Field("warning", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    summary: str = "{rule}: {model} {version} at {value}"
    description: str = ""
    runbook_url: str | None = None
    action: Literal["notify", "rollback"] = "notify"
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def window_names(self) -> tuple[str, ...]:
        return ("short", "long") if self.windows == "both" else (self.windows,)

    @field_validator("match")
    @classmethod
    def _check_match(cls, match: dict[str, str]) -> dict[str, str]:
        _check_label_names(match)
        if "window" in match:
            raise ValueError("choose windows with 'windows: short|long|both', not a matcher")
        return match

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        _check_label_names(labels)
        overridden = RESERVED_LABELS.intersection(labels)
        if overridden:
            raise ValueError(f"{sorted(overridden)} are set by driftline itself")
        return labels

    @field_validator("summary", "description")
    @classmethod
    def _check_template(cls, template: str, info: ValidationInfo) -> str:
        allowed = {"rule", "value", "threshold", "window", *INSTANCE_LABELS}
        allowed.update(info.data.get("match") or {})
        for name, spec in template_fields(template):
            if name not in allowed:
                raise ValueError(f"unknown placeholder {{{name}}} (use one of {sorted(allowed)})")
            if spec and (name != "value" or not _VALUE_SPEC.match(spec)):
                raise ValueError(f"format {{{name}:{spec}}} unsupported (only {{value:.3f}}-like)")
        return template


def _check_label_names(labels: dict[str, str]) -> None:
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"{name!r} is not a label name")


def _name_rule_errors(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Re-raise each rule's errors located by the rule's name instead of its list index."""
    try:
        rules = handler(value)
    except pydantic.ValidationError as error:
        raw = value if isinstance(value, list) else []
        details = []
        for item in error.errors():
            location = list(item["loc"])
            if location and isinstance(location[0], int) and location[0] < len(raw):
                entry = raw[location[0]]
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    location[0] = entry["name"]
            details.append(
                {
                    "type": PydanticCustomError(item["type"], item["msg"]),
                    "loc": tuple(location),
                    "input": item.get("input"),
                }
            )
        raise pydantic.ValidationError.from_exception_data("rules", details) from None  # type: ignore[arg-type]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise PydanticCustomError(
                "duplicate_rule", "two rules are named {name}", {"name": repr(rule.name)}
            )
        seen.add(rule.name)
    return rules


RuleList = Annotated[list[RuleConfig], WrapValidator(_name_rule_errors)]


# --------------------------------------------------------------------------------- notifiers


def _states(*states: AlertState) -> list[AlertState]:
    return list(states)


class AlertmanagerNotifierConfig(StrictConfig):
    """Alertmanager's v2 API (``POST /api/v2/alerts``); firing alerts are re-sent periodically."""

    type: Literal["alertmanager"]
    url: str = Field(pattern=r"^https?://")
    resend_seconds: float = Field(60.0, gt=0)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class WebhookNotifierConfig(StrictConfig):
    """A generic JSON POST per alert transition."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = None
    states: list[AlertState] = Field(default_factory=lambda: _states("firing", "resolved"))
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class LogNotifierConfig(StrictConfig):
    """One log line per alert transition."""

    type: Literal["log"]
    states: list[AlertState] = Field(default_factory=lambda: _states(*ALERT_STATES))


NotifierConfig = Annotated[
    AlertmanagerNotifierConfig | WebhookNotifierConfig | LogNotifierConfig,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------------- rollback


class WebhookActionConfig(StrictConfig):
    """POST a JSON rollback order (model, from/to version, rule, the numbers, the runbook)."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = None
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class KafkaControlActionConfig(StrictConfig):
    """A rollback command on the control topic (``topics.control`` unless ``topic`` is set)."""

    type: Literal["kafka_control"]
    topic: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)


class RedisKeyActionConfig(StrictConfig):
    """SET a Redis key (``{model}`` is replaced) to the version services should serve."""

    type: Literal["redis_key"]
    key: str = "driftline:active-version:{model}"


class ArgoRolloutsActionConfig(StrictConfig):
    """Abort the model's Argo Rollout: merge-patch ``{"status":{"abort":true}}`` on its status.

    The defaults are the in-cluster service account's API address, token and CA.
    """

    type: Literal["argo_rollouts"]
    api_url: str = Field("https://kubernetes.default.svc", pattern=r"^https?://")
    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    rollout: str = "{model}"
    token_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    token_env: str | None = None
    ca_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    timeout_seconds: float = Field(10.0, gt=0, le=120)


RollbackActionConfig = Annotated[
    WebhookActionConfig
    | KafkaControlActionConfig
    | RedisKeyActionConfig
    | ArgoRolloutsActionConfig,
    Field(discriminator="type"),
]


class RollbackConfig(StrictConfig):
    """When and how a firing ``action: rollback`` alert rolls a model back."""

    dry_run: bool = Field(
        True, description="Decide and audit, run no action. Turn off once the drill looks right."
    )
    cooldown_seconds: float = Field(1800.0, ge=0)
    max_per_day: int = Field(3, ge=0, description="Rollbacks per model in any 24 h.")
    retries: int = Field(3, ge=0, le=20, description="Attempts after the first, per action.")
    backoff_seconds: float = Field(1.0, ge=0, le=600)
    backoff_max_seconds: float = Field(30.0, ge=0, le=3600)
    incident_ttl_seconds: int = Field(7 * 86400, ge=60)
    actions: list[RollbackActionConfig] = Field(default_factory=list)


class WebhookReceiverConfig(StrictConfig):
    """``driftline webhook``: Alertmanager's webhook (payload version 4) on ``/v1/alertmanager``.

    Secrets come from the environment or a file, never from the config itself. Without any, the
    receiver refuses to start unless run with ``--dev``.
    """

    host: str = "127.0.0.1"
    port: int = Field(18080, ge=0, le=65535)
    token_env: str | None = "DRIFTLINE_WEBHOOK_TOKEN"
    token_file: str | None = None
    hmac_secret_env: str | None = None
    hmac_secret_file: str | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024)
    dedup_ttl_seconds: int = Field(7 * 86400, ge=60)


class EngineConfig(StrictConfig):
    enabled: bool = Field(True, description="Evaluate the rules inside `driftline evaluate`.")
    rollback: bool = Field(True, description="The engine runs rollbacks itself.")


def _log_only() -> list[NotifierConfig]:
    return [LogNotifierConfig(type="log")]


class AlertingConfig(StrictConfig):
    engine: EngineConfig = EngineConfig()
    notifiers: list[NotifierConfig] = Field(default_factory=lambda: _log_only())
    rollback: RollbackConfig = RollbackConfig()
    webhook: WebhookReceiverConfig = WebhookReceiverConfig()
    runbook_base_url: str = Field(
        "docs/runbooks/", description="A rule without runbook_url links <base><rule name>.md."
    )
    external_url: str | None = Field(None, description="generatorURL of alerts sent.")
    audit_max_entries: int = Field(100_000, ge=100)

    def runbook_url(self, rule: RuleConfig) -> str:
        return rule.runbook_url or f"{self.runbook_base_url}{rule.name}.md"
