"""The configuration reference (``docs/configuration.md``), generated from the pydantic model.

``python -m driftline.config_reference --write docs/configuration.md`` regenerates it;
``tests/unit/test_config_reference.py`` fails when the file and :class:`~driftline.config.Config`
disagree, so a key cannot be added, renamed or removed without its documentation.

Key paths are written as in YAML: ``kafka.bootstrap_servers``; ``models.<name>.segments`` for a
mapping of names; ``rules[].for`` for a list (a field's YAML name, i.e. its alias, is used);
``alerting.notifiers[type=webhook].url`` for one kind of a list of kinds told apart by ``type``.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from driftline.config import Config
from driftline.generated_reference import write_reference

__all__ = ["ConfigKey", "config_keys", "render"]


@dataclass(frozen=True)
class ConfigKey:
    path: str
    type: str
    default: str
    constraints: str
    description: str


NOTES: dict[str, str] = {
    # Keys whose pydantic field carries no description (driftline/config.py is shared; the prose
    # lives here). tests/unit/test_config_reference.py checks that every path here exists.
    "kafka": "Where the Kafka cluster is and how to talk to it.",
    "kafka.bootstrap_servers": "Comma-separated host:port list.",
    "kafka.group_id": "Consumer group of `driftline consume` (labels: `<group_id>-labels`); "
    "consumer lag is reported for it.",
    "redis": "The Redis (or Redis Cluster) holding windows, references, checkpoints and the "
    "alerting ledger.",
    "redis.url": "`redis://`, `rediss://` (TLS) or `redis+cluster://host:port/0`.",
    "redis.key_prefix": "Every key is `<prefix>:{<model>}:...`; two deployments may share a "
    "Redis with different prefixes.",
    "redis.username": "Redis ACL user.",
    "redis.password": "Redis password (prefer an ACL user per deployment).",
    "redis.ssl": "TLS without a `rediss://` URL.",
    "redis.ssl_ca_certs": "CA bundle to verify the server with.",
    "topics": "Kafka topic names.",
    "topics.events": "Inference events (`driftline/schema/inference-event.schema.json`).",
    "topics.labels": "Ground-truth labels (`driftline/schema/label-event.schema.json`).",
    "topics.dead_letter": "Refused messages, unchanged, with the reason in headers.",
    "topics.control": "Rollback commands of the `kafka_control` action, keyed by model.",
    "windows.bucket_seconds": "Width of a time bucket; buckets serve windows shorter than 10 "
    "rollups.",
    "windows.rollup_seconds": "Width of a rollup, which serves the long window.",
    "windows.short_seconds": "The short window: reacts fast.",
    "windows.long_seconds": "The long window: proves it matters.",
    "consumer": "`driftline consume` and `consume-labels`.",
    "consumer.batch_size": "Messages per `consume()` call, i.e. per Redis round trip.",
    "consumer.poll_timeout_seconds": "How long one poll waits for messages.",
    "consumer.max_event_bytes": "Larger messages are dead-lettered as `oversized`.",
    "evaluator": "`driftline evaluate`.",
    "evaluator.tick_seconds": "How often figures are computed and rules evaluated.",
    "evaluator.metrics_host": "Address `/metrics` listens on (`0.0.0.0` in a container).",
    "evaluator.metrics_port": "Port of `/metrics` (`--port` overrides it).",
    "monitoring": "What is measured, and the caps on what is admitted.",
    "monitoring.low_confidence_threshold": "Confidence below this counts as low confidence.",
    "monitoring.latency_relative_accuracy": "Relative error of the latency quantiles.",
    "monitoring.confidence_bins": "Bins of the confidence histogram (drift and calibration).",
    "monitoring.accept_unknown_models": "Monitor models not listed under `models`, up to "
    "`max_models`; otherwise their events are refused as `unknown_model`.",
    "monitoring.max_models": "Models admitted in all.",
    "monitoring.max_versions_per_model": "Further versions count as version `__overflow__`.",
    "monitoring.max_segment_values": "Per segment attribute; further values count as "
    "`__overflow__`.",
    "models": "Per-model settings, by model name. Unlisted models get the defaults.",
    "models.<name>.features": "Feature name -> `numeric` or `categorical` (default: inferred "
    "when the reference is built).",
    "models.<name>.segments": "Segment attributes sliced on their own (never crossed), at most 8.",
    "models.<name>.stable_version": "The version a rollback goes back to (default: the one "
    "healthy most recently).",
    "models.<name>.labels": "Join labels and compute quality (docs/quality.md).",
    "rules": "Alert rules, evaluated by `driftline evaluate` and exported by `driftline rules "
    "export` (docs/alerting.md).",
    "rules[].name": "Also the alertname.",
    "rules[].metric": "A metric driftline exports.",
    "rules[].match": "Label = value matchers.",
    "rules[].threshold": "Compared with the value (or with the relative value).",
    "rules[].relative": "Compare with a reference series, e.g. canary against stable.",
    "rules[].for": "How long the breach must last before firing.",
    "rules[].keep_firing_for": "How long a firing alert holds after the breach ends.",
    "rules[].min_samples": "Events in the window below which the alert is `nodata`.",
    "rules[].action": "`rollback` hands a firing alert to the rollback executor.",
    "rules[].labels": "Extra alert labels.",
    "alerting": "Notifiers, rollback and the webhook receiver (docs/alerting.md).",
    "alerting.engine": "The built-in rule engine inside `driftline evaluate`.",
    "alerting.rollback.cooldown_seconds": "No second rollback of a model within this.",
    "alerting.rollback.actions": "What a rollback does; every action runs, each retried.",
    "alerting.webhook.host": "Address `driftline webhook` listens on.",
    "alerting.webhook.port": "Port of `driftline webhook` (`--port` overrides it).",
    "alerting.webhook.token_env": "Environment variable holding the bearer token Alertmanager "
    "sends.",
    "drift": "How references are built and drift is decided (docs/drift.md).",
    "drift.minimum_samples": "Events per window below which a feature is `nodata`.",
    "drift.false_discovery_rate": "Benjamini-Hochberg rate over the features of a series.",
    "drift.models": "Per-model drift settings.",
}


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[ConfigKey]:
    """Every key of ``model``, sections included, depth first in declaration order."""
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        annotation = _unwrap(info.annotation)
        yield ConfigKey(
            path,
            _type_name(annotation),
            _default(info),
            _constraints(info),
            _description(path, info, annotation),
        )
        yield from _nested(path, annotation)


def _nested(path: str, annotation: Any) -> Iterator[ConfigKey]:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    models = [a for a in _members(annotation) if _is_model(a)]
    if _is_model(annotation):
        yield from config_keys(annotation, path + ".")
    elif origin in (Union, types.UnionType) and len(models) == 1:
        yield from config_keys(models[0], path + ".")
    elif origin is dict and _is_model(_unwrap(arguments[1])):
        yield from config_keys(_unwrap(arguments[1]), path + ".<name>.")
    elif origin is list:
        item = _unwrap(arguments[0])
        kinds = [a for a in _members(item) if _is_model(a)]
        if len(kinds) == 1:
            yield from config_keys(kinds[0], path + "[].")
        for kind in kinds if len(kinds) > 1 else []:
            tag = typing.get_args(_unwrap(kind.model_fields["type"].annotation))[0]
            yield from config_keys(kind, f"{path}[type={tag}].")


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if _is_model(annotation):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(json.dumps(member.value) for member in annotation)
    if origin is Literal:
        return " \\| ".join(json.dumps(value) for value in arguments)
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(argument) for argument in arguments)
    if origin is list:
        return f"list of {_type_name(arguments[0])}"
    if origin is dict:
        return f"map of {_type_name(arguments[0])} to {_type_name(arguments[1])}"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [item.model_dump(mode="json", exclude_defaults=True) for item in value]
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value, sort_keys=True)


def _constraints(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}")
        for attribute in ("min_length", "max_length", "pattern"):
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{attribute} {value}")
    return ", ".join(found).replace("|", "\\|")


def _description(path: str, info: FieldInfo, annotation: Any) -> str:
    text = info.description or NOTES.get(path, "")
    if not text:
        models = [a for a in _members(annotation) if _is_model(a)]
        if (
            len(models) == 1
            and models[0].__doc__
            and not models[0].__doc__.startswith(
                models[0].__name__ + "("  # pydantic's generated docstring: no prose
            )
        ):
            text = models[0].__doc__.strip().split("\n\n")[0]
    return " ".join(text.split()).replace("|", "\\|")


HEADER = """# Configuration reference

<!-- Generated by `python -m driftline.config_reference --write docs/configuration.md` from the
pydantic model in driftline/config.py; tests/unit/test_config_reference.py fails when they differ.
Do not edit by hand. -->

One YAML file, passed to every command as `--config`. Every key has a default except where it
says `required`; unknown keys, a key given twice in one mapping, and numbers that are not finite
are errors, and every error names the key and the bad value (or the line, for a key given twice).
`<name>` stands for a name you choose (a model, a feature); `[]` for an item of a list;
`[type=...]` for the kind of item a list of kinds holds. Durations (`for`, `keep_firing_for`)
take seconds or strings like `90s`, `5m`, `1h30m`. Deeper explanations: docs/alerting.md (rules,
`alerting`), docs/drift.md (`drift`), docs/quality.md (`models.<name>.labels`, `quality`).
"""


def render() -> str:
    sections: dict[str, list[ConfigKey]] = {}
    for key in config_keys():
        top = key.path.split(".")[0].split("[")[0]
        sections.setdefault(top, []).append(key)
    lines = [HEADER]
    for top, keys in sections.items():
        lines.append(f"\n## `{top}`\n")
        if keys[0].description:
            lines.append(keys[0].description + "\n")
        lines.append("| key | type | default | allowed | description |")
        lines.append("|---|---|---|---|---|")
        for key in keys:
            default = f"`{key.default}`" if key.default else ""
            lines.append(
                f"| `{key.path}` | {key.type} | {default} | {key.constraints} | {key.description} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_reference(render, __doc__.split("\n\n")[0] if __doc__ else "", argv)


if __name__ == "__main__":
    sys.exit(main())
