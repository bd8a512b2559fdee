"""``driftline rules export``: the config's rules as Prometheus rules and promtool tests.

The PromQL is the built-in engine's reading of a rule (``alerting.rule_conditions``), written for
Prometheus:

* series: ``metric{match..., window="short"}``;
* relative rules: ``series / ignoring(<reference labels>, <ignoring>) group_left reference``
  (``-`` for ``difference``, and ``-(series - reference)`` for ``drop``);
* the comparison filters: ``(... > threshold)``;
* minimum samples: ``and on(model, version, deployment, segment, window)
  (driftline_window_events{window="short"} >= N)``, and the same for the reference, joined on
  the labels the two share, so thin traffic gives no result, hence no alert;
* ``windows: both``: the short condition ``and ignoring(window)`` the long one;
* ``max without(window)`` last, so an alert's labels do not depend on the windows.

The test file feeds every rule a breach with exactly ``min_samples`` events (it must fire after
``for``, not before) and the same breach with one event fewer (it must not fire).
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping, Sequence
from typing import Any

from alerting import metric_names as names
from alerting.rule_conditions import COMPARISONS, RELATIVE_MODES
from driftline.alerting_config import (
    AlertingConfig,
    RuleConfig,
    format_duration,
    template_fields,
)

__all__ = [
    "RELATIVE_PROMQL",
    "go_template",
    "prometheus_rule_file",
    "promql",
    "promtool_test_file",
]

RELATIVE_PROMQL = {
    "ratio": "({value} / ignoring({free}) group_left {reference})",
    "difference": "({value} - ignoring({free}) group_left {reference})",
    "drop": "-({value} - ignoring({free}) group_left {reference})",
}
"""PromQL twins of ``alerting.rule_conditions.RELATIVE_MODES`` (keep the two in step)."""

GROUP_NAME = "driftline"
TEST_MODEL = "test-model"


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def selector(metric: str, matchers: Mapping[str, str]) -> str:
    inside = ",".join(f"{name}={_quote(value)}" for name, value in sorted(matchers.items()))
    return f"{metric}{{{inside}}}" if inside else metric


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def windowed(metric: str) -> bool:
    """Whether ``metric`` has a window label (an uncatalogued metric is assumed to)."""
    known = {entry.name: entry for entry in names.CATALOGUE}.get(metric)
    return known is None or "window" in known.labels


def _in_window(metric: str, matchers: Mapping[str, str], window: str) -> dict[str, str]:
    return {**matchers, "window": window} if windowed(metric) else dict(matchers)


def _window_condition(rule: RuleConfig, window: str) -> str:
    series = selector(rule.metric, _in_window(rule.metric, rule.match, window))
    # A metric without a window label is joined with the window's events per series.
    events_labels = names.WINDOW_LABELS if windowed(rule.metric) else names.SERIES_LABELS
    relative = rule.relative
    free: list[str] = []
    wanted: dict[str, str] = {}
    if relative is None:
        value = series
    else:
        free = sorted({*relative.reference, *relative.ignoring})
        wanted = {k: v for k, v in rule.match.items() if k not in relative.ignoring}
        wanted.update(relative.reference)
        reference_metric = relative.metric or rule.metric
        reference = selector(reference_metric, _in_window(reference_metric, wanted, window))
        value = RELATIVE_PROMQL[relative.mode].format(
            value=series, free=", ".join(free), reference=reference
        )
    condition = f"({value} {rule.comparison} {_number(rule.threshold)})"
    if rule.min_samples > 0:
        events = selector(rule.samples_metric, {"window": window})
        condition += f" and on({', '.join(events_labels)}) ({events} >= {rule.min_samples})"
    if relative is not None:
        minimum = rule.min_samples if relative.min_samples is None else relative.min_samples
        if minimum > 0:
            shared = [label for label in events_labels if label not in free]
            wanted_events = {k: v for k, v in wanted.items() if k in names.WINDOW_LABELS}
            events = selector(rule.samples_metric, {**wanted_events, "window": window})
            condition += f" and on({', '.join(shared)}) ({events} >= {minimum})"
    return f"({condition})"


def promql(rule: RuleConfig) -> str:
    """The rule's alert expression."""
    conditions = [_window_condition(rule, window) for window in rule.window_names]
    return f"max without(window) ({' and ignoring(window) '.join(conditions)})"


def go_template(template: str, rule: RuleConfig) -> str:
    """A rule template in Prometheus' Go template language.

    >>> rule = RuleConfig(name="p99", metric="m", comparison=">", threshold=0.2)
    >>> go_template("{rule}: {model} p99 {value:.3f}s > {threshold}s {{x}}", rule)
    'p99: {{ $labels.model }} p99 {{ printf "%.3f" $value }}s > 0.2s {{ "{" }}x{{ "}" }}'
    """
    out = []
    for literal, name, spec, _ in _parse(template):
        out.append(literal.replace("{", "\0").replace("}", '{{ "}" }}').replace("\0", '{{ "{" }}'))
        if name is None:
            continue
        if name == "value":
            out.append(f'{{{{ printf "%{spec}" $value }}}}' if spec else "{{ $value }}")
        elif name == "threshold":
            out.append(f"{rule.threshold:g}")
        elif name == "rule":
            out.append(rule.name)
        elif name == "window":
            out.append(rule.window_names[0])
        else:
            out.append(f"{{{{ $labels.{name} }}}}")
    return "".join(out)


def _parse(template: str) -> list[tuple[str, str | None, str, str | None]]:
    template_fields(template)  # validates
    return [
        (literal, name, spec or "", conversion)
        for literal, name, spec, conversion in string.Formatter().parse(template)
    ]


def prometheus_rule(rule: RuleConfig, alerting: AlertingConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"alert": rule.name, "expr": promql(rule)}
    if rule.for_seconds:
        entry["for"] = format_duration(rule.for_seconds)
    if rule.keep_firing_for_seconds:
        entry["keep_firing_for"] = format_duration(rule.keep_firing_for_seconds)
    entry["labels"] = {**rule.labels, "severity": rule.severity, "action": rule.action}
    annotations = {
        "summary": go_template(rule.summary, rule),
        "description": go_template(rule.description, rule),
        "runbook_url": alerting.runbook_url(rule),
        "value": "{{ $value }}",
        "threshold": f"{rule.threshold:g}",
    }
    entry["annotations"] = {name: text for name, text in annotations.items() if text}
    return entry


def prometheus_rule_file(rules: Sequence[RuleConfig], alerting: AlertingConfig) -> dict[str, Any]:
    return {
        "groups": [
            {"name": GROUP_NAME, "rules": [prometheus_rule(rule, alerting) for rule in rules]}
        ]
    }


# ------------------------------------------------------------------------- promtool tests


def _breaching(comparison: str, threshold: float) -> float:
    """A round value on the alerting side of the threshold (exact in binary, printed alike by
    Go and Python)."""
    above = comparison in (">", ">=")
    if threshold == 0:
        return 1.0 if above else -1.0
    if (threshold > 0) == above:
        return threshold * 2
    return threshold / 2


def _go_value(value: float) -> str:
    return f"{value:g}"


def _series_labels(rule: RuleConfig) -> dict[str, str]:
    labels = {"model": TEST_MODEL, "version": "v2", "deployment": "canary"}
    labels.update(rule.match)
    return labels


def _test_group(rule: RuleConfig, alerting: AlertingConfig, events: int) -> dict[str, Any]:
    """Input series where ``rule`` breaches with ``events`` events in each window."""
    # About five samples per `for`, on a ladder of intervals so the file's common evaluation
    # interval (their gcd) stays coarse and promtool fast.
    interval_s = (
        max([step for step in (1, 5, 15, 30, 60) if step <= max(1.0, rule.for_seconds / 5)])
        if rule.for_seconds
        else 15
    )
    steps = math.ceil((rule.for_seconds + rule.keep_firing_for_seconds) / interval_s) + 4
    labels = _series_labels(rule)
    target = _breaching(rule.comparison, rule.threshold)
    series: list[dict[str, str]] = []
    relative = rule.relative
    value, reference_value = target, 0.0
    reference_labels: dict[str, str] = {}
    if relative is not None:
        reference_value = 1.0 if relative.mode == "ratio" else 0.0
        value = {"ratio": target, "difference": target, "drop": -target}[relative.mode]
        reference_labels = {**labels, "version": "v1", "deployment": "stable"}
        reference_labels.update(relative.reference)
        assert RELATIVE_MODES[relative.mode](value, reference_value) == target
    for window in rule.window_names:
        if windowed(rule.metric) or window == rule.window_names[0]:
            series.append(
                {
                    "series": selector(rule.metric, _in_window(rule.metric, labels, window)),
                    "values": f"{_number(value)}+0x{steps}",
                }
            )
        series.append(
            {
                "series": selector(rule.samples_metric, _events_labels(labels, window)),
                "values": f"{events}+0x{steps}",
            }
        )
        if relative is not None:
            reference_metric = relative.metric or rule.metric
            if windowed(reference_metric) or window == rule.window_names[0]:
                series.append(
                    {
                        "series": selector(
                            reference_metric, _in_window(reference_metric, reference_labels, window)
                        ),
                        "values": f"{_number(reference_value)}+0x{steps}",
                    }
                )
            minimum = rule.min_samples if relative.min_samples is None else relative.min_samples
            series.append(
                {
                    "series": selector(
                        rule.samples_metric, _events_labels(reference_labels, window)
                    ),
                    "values": f"{max(events, minimum)}+0x{steps}",
                }
            )
    return {
        "interval": f"{interval_s}s",
        "input_series": series,
        "target": target,
        "labels": labels,
        "interval_s": interval_s,
    }


def _events_labels(labels: Mapping[str, str], window: str) -> dict[str, str]:
    return {name: labels[name] for name in names.WINDOW_LABELS if labels.get(name)} | {
        "window": window
    }


def _expected_alert(
    rule: RuleConfig, alerting: AlertingConfig, labels: Mapping[str, str], value: float
) -> dict[str, Any]:
    expected_labels = {**labels, **rule.labels, "severity": rule.severity, "action": rule.action}
    # Prometheus drops labels whose value is empty (segment="" is "no segment label").
    expected_labels = {name: value for name, value in expected_labels.items() if value != ""}
    fields: dict[str, Any] = {
        name: labels.get(name, "")
        for name in ("model", "version", "deployment", "segment", "feature")
    }
    fields.update(labels)
    fields.update(rule=rule.name, threshold=f"{rule.threshold:g}", window=rule.window_names[0])

    def render(template: str) -> str:
        rendered = dict(fields)
        for name, spec in template_fields(template):
            if name == "value":
                rendered["value"] = _go_value(value) if not spec else value
        return template.format(**rendered)

    annotations = {
        "summary": render(rule.summary),
        "description": render(rule.description),
        "runbook_url": alerting.runbook_url(rule),
        "value": _go_value(value),
        "threshold": f"{rule.threshold:g}",
    }
    return {
        "exp_labels": expected_labels,
        "exp_annotations": {k: v for k, v in annotations.items() if v},
    }


def promtool_test_file(
    rules: Sequence[RuleConfig], alerting: AlertingConfig, rule_file: str
) -> dict[str, Any]:
    """A ``promtool test rules`` file exercising every rule: fires after ``for`` with
    ``min_samples`` events, not before, and never with one event fewer."""
    tests = []
    for rule in rules:
        assert rule.comparison in COMPARISONS
        enough = _test_group(rule, alerting, max(rule.min_samples, 1))
        step = enough["interval_s"]
        fire_at = math.ceil(rule.for_seconds / step) * step
        cases: list[dict[str, Any]] = [
            {
                "eval_time": f"{fire_at}s",
                "alertname": rule.name,
                "exp_alerts": [_expected_alert(rule, alerting, enough["labels"], enough["target"])],
            }
        ]
        if fire_at >= step:
            cases.insert(
                0, {"eval_time": f"{fire_at - step}s", "alertname": rule.name, "exp_alerts": []}
            )
        tests.append(
            {
                "name": f"{rule.name}: fires after for",
                "interval": enough["interval"],
                "input_series": enough["input_series"],
                "alert_rule_test": cases,
            }
        )
        if rule.min_samples > 0:
            thin = _test_group(rule, alerting, rule.min_samples - 1)
            tests.append(
                {
                    "name": f"{rule.name}: below min_samples never fires",
                    "interval": thin["interval"],
                    "input_series": thin["input_series"],
                    "alert_rule_test": [
                        {
                            "eval_time": f"{fire_at + step}s",
                            "alertname": rule.name,
                            "exp_alerts": [],
                        }
                    ],
                }
            )
    # Rules are evaluated at the file's one interval: a divisor of every group's interval keeps
    # each group's "fires at" and "not yet" evaluations on the grid.
    evaluation_s = math.gcd(*(int(test["interval"][:-1]) for test in tests)) if tests else 15
    return {"rule_files": [rule_file], "evaluation_interval": f"{evaluation_s}s", "tests": tests}
