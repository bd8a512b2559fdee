"""The driftline Grafana dashboards, as code: ``python deploy/grafana/generate.py`` rewrites
``deploy/grafana/dashboards/*.json``.

Plain Python and JSON (no SDK to install). The JSON files are what Grafana provisions and what
reviewers read; ``tests/e2e/test_dashboards.py`` checks that they equal this script's output and
runs every query in them against the real Prometheus after live traffic.

Dashboard variables: ``$datasource`` everywhere; the model page has ``$model``, ``$version``,
``$deployment`` (multi-value, "All" = ``.*``), ``$window`` (``short``/``long``) and ``$class``
(a configured positive class); the operations page has ``$job`` (the scrape job of the
evaluators). ``$__rate_interval`` is Grafana's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

Panel = dict[str, Any]


def _target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> Panel:
    target: Panel = {
        "datasource": DATASOURCE,
        "expr": expr,
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if legend:
        target["legendFormat"] = legend
    if instant:
        target["format"] = "table"
    return target


def _targets(*queries: tuple[str, str], instant: bool = False) -> list[Panel]:
    return [
        _target(expr, legend, instant=instant, ref=chr(ord("A") + index))
        for index, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    overrides: list[Panel] | None = None,
    thresholds: list[tuple[str, float | None]] | None = None,
) -> Panel:
    steps = [{"color": color, "value": value} for color, value in (thresholds or [("green", None)])]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "targets": _targets(*queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "thresholdsStyle": {"mode": "line" if thresholds else "off"},
                },
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    description: str = "",
    no_value: str | None = None,
    red_above: float | None = None,
) -> Panel:
    steps: list[Panel] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    defaults: Panel = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": 4, "h": 4},
        "targets": _targets((expr, "")),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
    }


def table(
    title: str,
    queries: list[tuple[str, str]],
    *,
    description: str = "",
    hide: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    rename: dict[str, str] | None = None,
    width: int = 12,
    height: int = 8,
) -> Panel:
    transformations: list[Panel] = []
    if len(queries) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {"excludeByName": dict.fromkeys(hide, True), "renameByName": rename or {}},
        }
    )
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "targets": _targets(*queries, instant=True),
        "transformations": transformations,
        "fieldConfig": {"defaults": {"custom": {"filterable": True}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }


def state_timeline(
    title: str, expr: str, legend: str, *, description: str = "", width: int = 24, height: int = 8
) -> Panel:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "targets": _targets((expr, legend)),
        "fieldConfig": {
            "defaults": {
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "ok", "color": "green", "index": 0},
                            "1": {"text": "drifted", "color": "red", "index": 1},
                        },
                    }
                ],
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"showLegend": False},
        },
    }


def row(title: str) -> Panel:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"w": 24, "h": 1},
        "panels": [],
    }


def _layout(panels: list[Panel]) -> list[Panel]:
    """Ids and grid positions, left to right, top to bottom."""
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        if panel["type"] == "row":
            x, y, row_height = 0, y + grid["h"], 0
        panel["id"] = number
    return panels


def _datasource_variable() -> Panel:
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def _query_variable(name: str, query: str, *, multi: bool = False, label: str = "") -> Panel:
    variable: Panel = {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "current": {},
        "options": [],
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


def _custom_variable(name: str, values: list[str]) -> Panel:
    return {
        "name": name,
        "label": name,
        "type": "custom",
        "query": ",".join(values),
        "current": {"text": values[0], "value": values[0], "selected": True},
        "options": [
            {"text": value, "value": value, "selected": index == 0}
            for index, value in enumerate(values)
        ],
        "hide": 0,
        "includeAll": False,
        "multi": False,
    }


def rollback_annotation(selector: str = "") -> Panel:
    """A rollback marker where the executed-rollback counter moved, or a new one appeared.

    ``changes()`` sees increments; a model's first rollback creates its series at 1, which only
    ``unless ... offset`` sees (``increase()`` would read 0 there).
    """
    counter = f'driftline_rollback_decisions_total{{decision="executed"{selector}}}'
    expr = (
        f"sum by (model, rule) (changes({counter}[1m]) > 0 "
        f"or ({counter} unless {counter} offset 1m))"
    )
    return {
        "name": "Rollbacks",
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "expr": expr,
        "step": "15s",
        "titleFormat": "rollback of {{model}}",
        "textFormat": "rule {{rule}}: see the audit stream <prefix>:{alerting}:audit",
        "tagKeys": "model,rule",
        "useValueForTime": False,
    }


def _builtin_annotation() -> Panel:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Panel],
    variables: list[Panel],
    annotations: list[Panel],
) -> Panel:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["driftline"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": ["driftline"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "driftline",
            }
        ],
        "templating": {"list": [_datasource_variable(), *variables]},
        "annotations": {"list": [_builtin_annotation(), *annotations]},
        "panels": _layout(panels),
    }


def overview() -> Panel:
    executed = 'driftline_rollback_decisions_total{decision="executed"}'
    panels = [
        stat("Models monitored", "max(driftline_models)"),
        stat("Events / s", f"sum(rate(driftline_events_total[{RATE}]))", unit="short"),
        stat("Consumer lag (messages)", "sum(driftline_consumer_lag_messages)", red_above=100_000),
        stat(
            "Stalest model (s)",
            "max(driftline_freshness_seconds)",
            unit="s",
            red_above=60,
            description="Evaluator clock minus the newest event applied, worst model.",
        ),
        stat(
            "Alerts firing", 'sum(driftline_alert_state{state="firing"})', no_value="0", red_above=1
        ),
        stat(
            "Rollbacks executed",
            f"sum({executed})",
            no_value="0",
            red_above=1,
            description="Ever, from the rollback audit counters in Redis.",
        ),
        row("Traffic"),
        timeseries(
            "Throughput by model (events/s)",
            [(f"sum by (model) (rate(driftline_events_total[{RATE}]))", "{{model}}")],
        ),
        timeseries(
            "Consumer lag by partition (messages)",
            [
                (
                    "sum by (topic, partition) (driftline_consumer_lag_messages)",
                    "{{topic}} [{{partition}}]",
                )
            ],
            description="Messages not yet committed by the consumer group.",
        ),
        timeseries(
            "Bad events by reason (/s)",
            [(f"sum by (reason) (rate(driftline_bad_events_total[{RATE}]))", "{{reason}}")],
            width=8,
            description="Refused and dead-lettered messages (docs: Publishing events).",
        ),
        timeseries(
            "Late events by model (/s)",
            [(f"sum by (model) (rate(driftline_late_events_total[{RATE}]))", "{{model}}")],
            width=8,
            description="Events too old for any window: counted, never windowed.",
        ),
        timeseries(
            "Freshness by model",
            [("max by (model) (driftline_freshness_seconds)", "{{model}}")],
            unit="s",
            width=8,
        ),
        row("Alerts and rollbacks"),
        timeseries(
            "Alerts by state",
            [
                (
                    'sum by (state) (driftline_alert_state{state=~"pending|firing|nodata"})',
                    "{{state}}",
                )
            ],
        ),
        table(
            "Pending and firing alerts",
            [('driftline_alert_state{state=~"pending|firing"} == 1', "")],
            hide=("Time", "__name__", "job", "instance", "Value"),
        ),
        timeseries(
            "Drift share by model version",
            [
                (
                    'max by (model, version, deployment) (driftline_drift_share_ratio{segment=""})',
                    "{{model}} {{version}} {{deployment}}",
                )
            ],
            unit="percentunit",
            thresholds=[("green", None), ("red", 0.3)],
        ),
        table(
            "Rollback decisions (ever)",
            [("sum by (model, rule, decision) (driftline_rollback_decisions_total)", "")],
            rename={"Value": "count"},
        ),
    ]
    return dashboard(
        "driftline-overview",
        "driftline / overview",
        "Every model at a glance: traffic, lag, refused events, freshness, alerts and rollbacks.",
        panels,
        [],
        [rollback_annotation()],
    )


SERIES = 'model="$model", version=~"$version", deployment=~"$deployment", segment=""'
WINDOWED = SERIES + ', window="$window"'
BY = "max by (version, deployment)"
LEGEND = "{{version}} {{deployment}}"
BOUNDS = [
    {
        "matcher": {"id": "byRegexp", "options": ".*(lower|upper)$"},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }
]


def _with_interval(metric: str, extra: str = "") -> list[tuple[str, str]]:
    """A quality figure and its Wilson 95 % bounds (dashed)."""
    selector = WINDOWED + extra
    return [
        (f"{BY} (driftline_{metric}_ratio{{{selector}}})", LEGEND),
        (
            f'{BY} (driftline_{metric}_interval_ratio{{{selector}, bound="lower"}})',
            LEGEND + " lower",
        ),
        (
            f'{BY} (driftline_{metric}_interval_ratio{{{selector}, bound="upper"}})',
            LEGEND + " upper",
        ),
    ]


def model_page() -> Panel:
    by_feature = "max by (version, deployment, feature)"
    quality = 'class="$class"'
    panels = [
        row("Traffic and latency ($window window)"),
        timeseries(
            "Throughput (events/s)",
            [
                (
                    f"sum by (version, deployment) "
                    f"(driftline_throughput_events_per_second{{{WINDOWED}}})",
                    LEGEND,
                )
            ],
            width=8,
        ),
        timeseries(
            "Latency p50 / p95 / p99",
            [
                (
                    f'{BY} (driftline_latency_seconds{{{WINDOWED}, quantile="{q}"}})',
                    f"{LEGEND} p{name}",
                )
                for q, name in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
            ],
            unit="s",
            width=16,
        ),
        timeseries(
            "Confidence",
            [
                (f"{BY} (driftline_confidence_mean_ratio{{{WINDOWED}}})", LEGEND + " mean"),
                (f"{BY} (driftline_low_confidence_ratio{{{WINDOWED}}})", LEGEND + " low share"),
            ],
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Error ratio",
            [(f"{BY} (driftline_error_ratio{{{WINDOWED}}})", LEGEND)],
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Canary vs stable: p99 latency",
            [
                (
                    'max by (version, deployment) (driftline_latency_seconds{model="$model", '
                    'segment="", window="$window", quantile="0.99"})',
                    LEGEND,
                )
            ],
            unit="s",
            width=8,
            description="Every version of the model, whatever $version says.",
        ),
        row("Drift against the reference"),
        timeseries(
            "Drift share (features drifted)",
            [(f"{BY} (driftline_drift_share_ratio{{{SERIES}}})", LEGEND)],
            unit="percentunit",
            width=8,
            thresholds=[("green", None), ("red", 0.3)],
        ),
        table(
            "Drift per feature ($window window)",
            [
                (f'{by_feature} (driftline_drift_score{{{WINDOWED}, stat="psi"}})', ""),
                (f"{by_feature} (driftline_drift_p_value{{{WINDOWED}}})", ""),
                (f"{by_feature} (driftline_drifted{{{SERIES}}})", ""),
            ],
            rename={"Value #A": "PSI", "Value #B": "p-value", "Value #C": "drifted"},
            width=16,
            description="PSI and chi-square p-value per feature (@prediction and @confidence "
            "too); drifted = the drift policy's verdict over all its windows "
            "(fast, short, long).",
        ),
        state_timeline(
            "Drifted features",
            f"max by (version, feature) (driftline_drifted{{{SERIES}}})",
            "{{version}} {{feature}}",
        ),
        timeseries(
            "PSI per feature",
            [
                (
                    f'max by (version, feature) (driftline_drift_score{{{WINDOWED}, stat="psi"}})',
                    "{{version}} {{feature}}",
                )
            ],
            thresholds=[("green", None), ("red", 0.1)],
        ),
        timeseries(
            "Sequential test: net shift (sd)",
            [
                (
                    f"max by (version, deployment, feature) "
                    f"(driftline_drift_sequential_shift_sd{{{SERIES}}})",
                    "{{version}} {{deployment}} {{feature}}",
                )
            ],
            description="While a sequential alarm holds a feature drifted: which way and how far "
            "the feature moved, in sd of its normal scores, to the nearest 0.25 (about 0 for a "
            "false alarm or a blip that is over). No line: no alarm holds.",
        ),
        timeseries(
            "Reference age",
            [('max by (model) (driftline_reference_age_seconds{model="$model"})', "{{model}}")],
            unit="s",
        ),
        row("Quality from labels ($window window, class $class)"),
        timeseries(
            "Accuracy (95 % interval dashed)",
            _with_interval("accuracy"),
            unit="percentunit",
            width=8,
            overrides=BOUNDS,
        ),
        timeseries(
            "Precision of $class (95 % interval dashed)",
            _with_interval("precision", ", " + quality),
            unit="percentunit",
            width=8,
            overrides=BOUNDS,
        ),
        timeseries(
            "Recall of $class (95 % interval dashed)",
            _with_interval("recall", ", " + quality),
            unit="percentunit",
            width=8,
            overrides=BOUNDS,
        ),
        timeseries(
            "F1 of $class",
            [(f"{BY} (driftline_f1_ratio{{{WINDOWED}, {quality}}})", LEGEND)],
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Estimated vs measured accuracy",
            [
                (f"{BY} (driftline_estimated_accuracy_ratio{{{WINDOWED}}})", LEGEND + " estimated"),
                (f"{BY} (driftline_accuracy_ratio{{{WINDOWED}}})", LEGEND + " measured"),
            ],
            unit="percentunit",
            width=8,
            description="The estimate uses confidence alone (calibrated by `driftline "
            "calibrate`): it leads the measured value while labels are late.",
        ),
        timeseries(
            "Labels: coverage and delay",
            [
                (f"{BY} (driftline_label_coverage_ratio{{{WINDOWED}}})", LEGEND + " coverage"),
                (
                    f'{BY} (driftline_label_delay_seconds{{{WINDOWED}, quantile="0.5"}})',
                    LEGEND + " median delay (s)",
                ),
            ],
            width=8,
        ),
        row("Canary and shadow vs stable ($window window)"),
        timeseries(
            "Difference to stable",
            [
                (
                    "max by (version, deployment, figure, class) (driftline_canary_difference"
                    '{model="$model", window="$window"})',
                    "{{version}} {{deployment}} {{figure}} {{class}}",
                )
            ],
        ),
        table(
            "Difference to stable, with p-value",
            [
                (
                    "max by (version, deployment, figure, class) (driftline_canary_difference"
                    '{model="$model", window="$window"})',
                    "",
                ),
                (
                    "max by (version, deployment, figure, class) (driftline_canary_p_value"
                    '{model="$model", window="$window"})',
                    "",
                ),
            ],
            rename={"Value #A": "difference", "Value #B": "p-value"},
        ),
        row("Segments ($window window)"),
        timeseries(
            "Traffic share by segment",
            [
                (
                    'max by (version, segment) (driftline_segment_share_ratio{model="$model", '
                    'version=~"$version", deployment=~"$deployment", segment!="", '
                    'window="$window"})',
                    "{{version}} {{segment}}",
                )
            ],
            unit="percentunit",
        ),
        timeseries(
            "Disparity ratio (four-fifths line at 0.8)",
            [
                (
                    "min by (version, segment, figure) (driftline_disparity_ratio"
                    '{model="$model", version=~"$version", deployment=~"$deployment", '
                    'window="$window"})',
                    "{{version}} {{segment}} {{figure}}",
                )
            ],
            thresholds=[("red", None), ("green", 0.8)],
        ),
        row("Alerts"),
        table(
            "Alerts of $model (not inactive)",
            [('driftline_alert_state{model="$model", state!="inactive"} == 1', "")],
            hide=("Time", "__name__", "job", "instance", "Value"),
            width=24,
        ),
    ]
    variables = [
        _query_variable("model", "label_values(driftline_window_events, model)"),
        _query_variable(
            "version", 'label_values(driftline_window_events{model="$model"}, version)', multi=True
        ),
        _query_variable(
            "deployment",
            'label_values(driftline_window_events{model="$model", '
            'version=~"$version"}, deployment)',
            multi=True,
        ),
        _custom_variable("window", ["short", "long"]),
        _query_variable(
            "class",
            'label_values(driftline_precision_ratio{model="$model"}, class)',
            label="positive class",
        ),
    ]
    return dashboard(
        "driftline-model",
        "driftline / model",
        "One model: latency, confidence, errors, drift per feature, quality with "
        "intervals, canary vs stable, segments.",
        panels,
        variables,
        [rollback_annotation(', model="$model"')],
    )


def operations() -> Panel:
    job = 'job="$job"'
    panels = [
        stat("Evaluators up", f"sum(up{{{job}}})", red_above=None),
        stat(
            "Active evaluators (lease holders)",
            f"sum(driftline_evaluator_leader{{{job}}})",
            description="Exactly 1 when healthy: one holder of the Redis lease, the others "
            "standby.",
        ),
        stat(
            "Series dropped (cap)",
            f"max(driftline_metrics_series_dropped{{{job}}})",
            red_above=1,
            description="Label sets left out of /metrics by evaluator.max_series.",
        ),
        stat(
            "Seconds since last tick",
            f"time() - max(driftline_evaluator_last_tick_timestamp_seconds{{{job}}})",
            unit="s",
            red_above=30,
            description="Grows when Redis or Kafka stalls the evaluator.",
        ),
        stat(
            "Total consumer lag",
            f"sum(driftline_consumer_lag_messages{{{job}}})",
            red_above=100_000,
        ),
        stat("Scrape samples", f"sum(scrape_samples_scraped{{{job}}})"),
        row("Evaluator"),
        timeseries(
            "Ticks per second",
            [
                (
                    f"sum by (instance) (rate(driftline_evaluator_ticks_total{{{job}}}[{RATE}]))",
                    "{{instance}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Tick duration",
            [
                (
                    f"max by (instance) (driftline_evaluator_tick_duration_seconds{{{job}}})",
                    "{{instance}}",
                )
            ],
            unit="s",
            width=8,
            description="One Redis round trip per model plus the figures: rises with "
            "Redis latency and with the number of series.",
        ),
        timeseries(
            "Lease holder",
            [(f"max by (instance) (driftline_evaluator_leader{{{job}}})", "{{instance}}")],
            width=8,
        ),
        timeseries(
            "Scrape duration and series dropped",
            [
                (
                    f"max by (instance) (scrape_duration_seconds{{{job}}})",
                    "{{instance}} scrape (s)",
                ),
                (
                    f"max by (instance) (driftline_metrics_series_dropped{{{job}}})",
                    "{{instance}} dropped",
                ),
            ],
        ),
        timeseries(
            "Reference age by model",
            [(f"max by (model) (driftline_reference_age_seconds{{{job}}})", "{{model}}")],
            unit="s",
        ),
        row("Kafka and Redis"),
        timeseries(
            "Consumer lag by partition",
            [
                (
                    f"sum by (group, topic, partition) (driftline_consumer_lag_messages{{{job}}})",
                    "{{group}} {{topic}} [{{partition}}]",
                )
            ],
            width=8,
        ),
        timeseries(
            "Bad events by reason (/s)",
            [
                (
                    f"sum by (reason) (rate(driftline_bad_events_total{{{job}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Labels refused by reason (/s)",
            [
                (
                    f"sum by (model, reason) "
                    f"(rate(driftline_labels_refused_total{{{job}}}[{RATE}]))",
                    "{{model}} {{reason}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Freshness by model (events reaching Redis)",
            [(f"max by (model) (driftline_freshness_seconds{{{job}}})", "{{model}}")],
            unit="s",
            width=8,
        ),
        timeseries(
            "Labels counted (/s)",
            [(f"sum by (model) (rate(driftline_labels_total{{{job}}}[{RATE}]))", "{{model}}")],
            width=8,
        ),
        timeseries(
            "Events applied (/s)",
            [(f"sum by (model) (rate(driftline_events_total{{{job}}}[{RATE}]))", "{{model}}")],
            width=8,
        ),
        row("Alerting path"),
        timeseries(
            "Rollback decisions",
            [
                (
                    "sum by (decision) "
                    f"(increase(driftline_rollback_decisions_total{{{job}}}[{RATE}]))",
                    "{{decision}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Webhook receiver: alerts by outcome, requests refused",
            [
                (
                    f"sum by (outcome) (increase(driftline_webhook_alerts_total{{{job}}}[{RATE}]))",
                    "{{outcome}}",
                ),
                (
                    "sum by (status) "
                    f"(increase(driftline_webhook_requests_refused_total{{{job}}}[{RATE}]))",
                    "refused {{status}}",
                ),
            ],
            width=8,
        ),
        timeseries(
            "Notifications failed",
            [
                (
                    f"sum by (notifier) "
                    f"(increase(driftline_alert_notifications_failed_total{{{job}}}[{RATE}]))",
                    "{{notifier}}",
                )
            ],
            width=8,
        ),
    ]
    variables = [
        _query_variable(
            "job", "label_values(driftline_evaluator_ticks_total, job)", label="scrape job"
        )
    ]
    return dashboard(
        "driftline-operations",
        "driftline / operations",
        "driftline itself: evaluator ticks and lease, series cap, Kafka lag, "
        "refused input, Redis-backed freshness, the alerting path.",
        panels,
        variables,
        [rollback_annotation()],
    )


def all_dashboards() -> dict[str, Panel]:
    """File name -> dashboard."""
    return {
        "overview.json": overview(),
        "model.json": model_page(),
        "operations.json": operations(),
    }


def render(board: Panel) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main() -> int:
    DASHBOARDS.mkdir(exist_ok=True)
    for name, board in all_dashboards().items():
        (DASHBOARDS / name).write_text(render(board), encoding="utf-8")
        print(f"wrote {DASHBOARDS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
