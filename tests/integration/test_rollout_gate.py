"""The rollout gate on real Kafka and Redis: promote, hold and rollback, with the numbers.

One world is loaded once for the module (each model is one scenario), through the real events and
labels consumers; every test then asks the gate (in process, over HTTP, or on the command line).
Expectations are arithmetic on the generated plan (``rollout_traffic``), never copies of what the
gate computed: precision 0.9 against 0.85 over exactly known counts, latency 1.5 times slower,
features shifted by 1.5 standard deviations.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient

from alerting.rollback_ledger import AlertingKeys
from alerting.rollout_gate import RolloutGate, VerdictRequestError
from alerting.rollout_gate_server import serve_gate
from alerting.rollout_verdict import Verdict
from alerting.webhook_receiver import sign
from consumers.kafka_consumer import EventConsumer
from consumers.label_consumer import LabelConsumer, labels_group
from detectors.quality_statistics import two_proportion_p_value
from detectors.reference_builder import ReferenceBuilder
from detectors.reference_cache import ReferenceCache
from detectors.stores.redis_reference_store import RedisReferenceStore
from detectors.stores.redis_store import RedisWindowStore
from detectors.window_store import KeySchema
from driftline.cli import main
from driftline.config import Config, parse_config
from driftline.rollout_commands import EXIT_CODES, build_gate
from tests.conftest import (
    committed_offsets,
    create_ready_topic,
    end_offsets,
    produce,
    write_config,
)
from tests.integration import expr_subset
from tests.integration.quality_traffic import run_until, store_for
from tests.integration.rollout_traffic import POSITIVE, Leg, LegTraffic, leg_traffic, shadow_of

SPAN_MS = 600_000  # traffic spread over the last ten minutes
BASE_CHECKS = [
    {"figure": "error_ratio", "max_rise": 0.01},
    {"figure": "latency_p99", "max_ratio": 1.2},
    {"figure": "low_confidence_ratio", "max_rise": 0.05},
]
PRECISION = {"figure": "precision", "class": POSITIVE, "max_drop": 0.02}
DRIFT = {"figure": "drift_share", "max_rise": 0.2}
AGREEMENT = {"figure": "agreement", "min_value": 0.95}


def _policy(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "minimum_events": 2000,
        "minimum_labelled": 500,
        "minimum_observation_seconds": 120,
        "checks": [*BASE_CHECKS, *extra],
    }


LABELLED = {"labels": {"positive_classes": [POSITIVE]}}
MODELS = {
    "good": {**LABELLED, "stable_version": "v1"},
    "thin": LABELLED,
    "precise": LABELLED,
    "slow": {},
    "drifty": {},
    "shadowy": LABELLED,
    "contrary": {},  # no labels: its predictions are kept on record for agreement alone
}
POLICIES = {
    "good": {**_policy(PRECISION, DRIFT), "steps": {"5": {"minimum_events": 2000}}},
    "thin": _policy(PRECISION),
    "precise": _policy(PRECISION),
    "slow": _policy(),
    "drifty": _policy(DRIFT),
    "shadowy": _policy(PRECISION, AGREEMENT),
    "contrary": _policy(AGREEMENT),
}
# (model, version, deployment, events, leg options)
PLAN: list[tuple[str, str, str, int, dict[str, Any]]] = [
    ("good", "v1", "stable", 8000, {}),
    ("good", "v2", "canary", 2500, {}),
    ("thin", "v1", "stable", 3000, {}),
    # 1 % canary on low volume, and awful: it must hold, never roll back.
    ("thin", "v2", "canary", 30, {"precision": 0.3, "latency_factor": 3.0, "error_ratio": 0.3}),
    ("precise", "v1", "stable", 8000, {"precision": 0.9}),
    ("precise", "v2", "canary", 2500, {"precision": 0.85}),
    ("slow", "v1", "stable", 8000, {}),
    ("slow", "v2", "canary", 2500, {"latency_factor": 1.5}),
    ("drifty", "v1", "stable", 8000, {}),
    ("drifty", "v2", "canary", 2500, {"feature_shift": 1.5}),
    ("shadowy", "v1", "stable", 8000, {}),
    ("contrary", "v1", "stable", 8000, {}),
]
# Shadow versions answering the same inputs (same event ids) as stable's first 3000 events,
# disagreeing on exactly this many of them: (model, version, events, disagreements).
SHADOWS = [("shadowy", "v2", 3000, 60), ("contrary", "v2", 3000, 600)]
GOOD_FIRST_PART = 1000  # of the good canary's events, before its first verdict


@dataclass
class World:
    config: Config
    config_path: Path
    store: RedisWindowStore
    gate: RolloutGate
    token: str
    traffic: dict[tuple[str, str], LegTraffic]
    before: dict[str, Verdict] = field(default_factory=dict)


def _topic(admin: AdminClient, name: str, partitions: int) -> str:
    return create_ready_topic(admin, f"test.{uuid.uuid4().hex[:10]}.{name}", partitions)


def _consume_events(
    config: Config, store: RedisWindowStore, client: redis.Redis, total: int
) -> None:
    keys = KeySchema(config.redis.key_prefix)
    cache = ReferenceCache(RedisReferenceStore(client, keys))

    def applied() -> int:
        return sum(
            count
            for model in MODELS
            for name, count in store.totals(model).items()
            if name.endswith("||events")
        )

    consumer = EventConsumer(config, store, feature_binner_for=cache.binner_for)
    run_until(consumer, lambda: applied() >= total, what="events")
    assert applied() == total


def _consume_labels(config: Config, store: RedisWindowStore, bootstrap: str) -> None:
    """Until the labels consumer committed every label sent (a label of a shadowed event counts
    once per leg, so counting labels would stop early)."""
    ends = end_offsets(bootstrap, config.topics.labels, 2)

    def done() -> bool:
        group = labels_group(config)
        committed = committed_offsets(bootstrap, group, config.topics.labels, 2)
        return [max(offset, 0) for offset in committed] == ends

    run_until(LabelConsumer(config, store), done, what="labels")


@pytest.fixture(scope="module")
def world(
    kafka_admin: AdminClient,
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    unique = uuid.uuid4().hex[:10]
    token = f"gate-{unique}"
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": f"test-{unique}"},
            "redis": {"url": redis_url, "key_prefix": f"t{unique}"},
            "topics": {
                "events": _topic(kafka_admin, "events", 2),
                "labels": _topic(kafka_admin, "labels", 2),
                "dead_letter": _topic(kafka_admin, "dead-letter", 1),
                "control": _topic(kafka_admin, "control", 1),
            },
            "consumer": {"poll_timeout_seconds": 0.05},
            "quality": {"minimum_labelled": 30},
            "models": MODELS,
            "rollout": {"models": POLICIES},
            "alerting": {"webhook": {"token_env": "DRIFTLINE_TEST_GATE_TOKEN"}},
        }
    )
    config_path = write_config(config, tmp_path_factory.mktemp("gate"))
    store = store_for(config, redis_client)
    now_ms = int(time.time() * 1000)
    traffic = {
        (model, version): leg_traffic(
            Leg(model, version, deployment, count, seed=seed, **options),
            end_ms=now_ms,
            span_ms=SPAN_MS,
        )
        for seed, (model, version, deployment, count, options) in enumerate(PLAN)
    }
    for seed, (model, version, count, flips) in enumerate(SHADOWS, start=len(PLAN)):
        stable = traffic[(model, "v1")]
        traffic[(model, version)] = shadow_of(stable, version, count, flips, seed=seed)
    # Drift references, from a sample of the stable distribution, before any event is binned.
    references = RedisReferenceStore(redis_client, KeySchema(config.redis.key_prefix))
    for model in ("good", "drifty"):
        sample = leg_traffic(
            Leg(model, "v0", "stable", 5000, seed=99), end_ms=2 * SPAN_MS, span_ms=SPAN_MS
        )
        builder = ReferenceBuilder(model, confidence_bins=config.monitoring.confidence_bins)
        builder.add(sample.decoded())
        references.save(builder.build(created_at_ms=now_ms))

    def send(legs: list[tuple[LegTraffic, slice]]) -> None:
        events = [raw for leg, part in legs for raw in leg.events[part]]
        labels = [raw for leg, part in legs for raw in leg.labels[part] if MODELS[leg.leg.model]]
        produce(kafka_bootstrap, config.topics.events, events)
        produce(kafka_bootstrap, config.topics.labels, labels)

    everything = slice(None)
    good_canary = traffic[("good", "v2")]
    first = [(leg, everything) for leg in traffic.values() if leg is not good_canary]
    first.append((good_canary, slice(0, GOOD_FIRST_PART)))
    send(first)
    _consume_events(config, store, redis_client, sum(len(leg.events[p]) for leg, p in first))
    _consume_labels(config, store, kafka_bootstrap)
    gate = build_gate(config, store)
    world = World(config, config_path, store, gate, token, traffic)
    world.before["good"] = gate.verdict("good", "v2")

    send([(good_canary, slice(GOOD_FIRST_PART, None))])
    total_events = sum(len(leg.events) for leg in traffic.values())
    _consume_events(config, store, redis_client, total_events)
    _consume_labels(config, store, kafka_bootstrap)
    yield world


def _reason(verdict: Verdict, check: str) -> dict[str, Any]:
    found = [r.to_dict() for r in verdict.reasons if r.check == check]
    assert len(found) == 1, [r.check for r in verdict.reasons]
    return found[0]


def test_a_candidate_as_good_as_stable_holds_before_the_minimum_and_promotes_after(
    world: World,
) -> None:
    before = world.before["good"]
    assert before.verdict == "hold"
    assert _reason(before, "minimum_events.candidate") == {
        "check": "minimum_events.candidate",
        "status": "hold",
        "message": "candidate has 1000 events in the long window (< 2000)",
        "samples": GOOD_FIRST_PART,
        "required": 2000,
    }
    # Nothing else held it: every check passed on the data it had.
    assert [r.check for r in before.reasons if r.status != "pass"] == ["minimum_events.candidate"]

    after = world.gate.verdict("good", "v2", step="5")
    assert after.verdict == "promote", after.summary()
    assert all(reason.status == "pass" for reason in after.reasons)
    candidate, stable = world.traffic[("good", "v2")], world.traffic[("good", "v1")]
    precision = _reason(after, "precision@fraud")
    assert precision["candidate_samples"] == candidate.predicted_positive == 750
    assert precision["baseline_samples"] == stable.predicted_positive == 2400
    assert precision["candidate"] == pytest.approx(candidate.true_positive / 750)
    assert precision["baseline"] == pytest.approx(stable.true_positive / 2400)
    answer = after.to_dict()
    assert answer["evidence"]["candidate"]["events"] == 2500
    assert answer["evidence"]["baseline"] == {"events": 8000, "labelled": 8000, "versions": ["v1"]}
    assert answer["evidence"]["candidate"]["observed_seconds"] >= 120
    assert answer["baseline"] == "v1"  # models.good.stable_version
    drift = _reason(after, "drift_share")
    assert drift["candidate"] is not None and drift["candidate"] <= 0.2


def test_five_points_of_precision_lost_rolls_back_with_the_numbers(world: World) -> None:
    verdict = world.gate.verdict("precise", "v2")
    assert verdict.verdict == "rollback", verdict.summary()
    reason = _reason(verdict, "precision@fraud")
    candidate, stable = world.traffic[("precise", "v2")], world.traffic[("precise", "v1")]
    # 638/750 against 2160/2400: exact by construction.
    assert (candidate.true_positive, candidate.predicted_positive) == (638, 750)
    assert (stable.true_positive, stable.predicted_positive) == (2160, 2400)
    assert reason["status"] == "rollback"
    assert reason["candidate"] == pytest.approx(638 / 750)
    assert reason["baseline"] == pytest.approx(0.9)
    assert reason["difference"] == pytest.approx(638 / 750 - 0.9)
    assert reason["p_value"] == pytest.approx(two_proportion_p_value(638, 750, 2160, 2400))
    assert reason["p_value"] < 0.01
    assert (reason["candidate_samples"], reason["baseline_samples"]) == (750, 2400)
    assert "precision@fraud 0.8507 vs 0.9000 (-4.93 points, limit -2.00)" in reason["message"]
    # Only precision failed.
    assert [r.check for r in verdict.reasons if r.status != "pass"] == ["precision@fraud"]


def test_fifty_percent_slower_at_p99_rolls_back_with_the_numbers(world: World) -> None:
    verdict = world.gate.verdict("slow", "v2")
    assert verdict.verdict == "rollback", verdict.summary()
    reason = _reason(verdict, "latency_p99")
    candidate, stable = world.traffic[("slow", "v2")], world.traffic[("slow", "v1")]
    expected = [
        float(np.quantile(np.round(leg.latency_ms, 3), 0.99, method="lower")) / 1000
        for leg in (candidate, stable)
    ]
    # The window's latency sketch is within 1 % of the exact quantile.
    assert reason["candidate_seconds"] == pytest.approx(expected[0], rel=0.011)
    assert reason["baseline_seconds"] == pytest.approx(expected[1], rel=0.011)
    assert reason["ratio"] == pytest.approx(expected[0] / expected[1], rel=0.025)
    assert 1.4 < reason["ratio"] < 1.6
    assert (reason["candidate_samples"], reason["baseline_samples"]) == (2500, 8000)
    assert [r.check for r in verdict.reasons if r.status != "pass"] == ["latency_p99"]


def test_a_drifted_candidate_rolls_back_with_its_drift_share(world: World) -> None:
    verdict = world.gate.verdict("drifty", "v2")
    assert verdict.verdict == "rollback", verdict.summary()
    reason = _reason(verdict, "drift_share")
    # Three of the reference's items (f0, f1, f2) moved by 1.5 sigma; stable's did not.
    assert reason["baseline"] == 0.0
    assert reason["candidate"] >= 0.5
    assert reason["difference"] == reason["candidate"] - reason["baseline"]
    assert "drifted" in reason["message"]
    assert [r.check for r in verdict.reasons if r.status != "pass"] == ["drift_share"]


def test_a_shadow_is_judged_on_the_same_inputs_and_on_its_own_labels(world: World) -> None:
    verdict = world.gate.verdict("shadowy", "v2")
    assert verdict.verdict == "promote", verdict.summary()
    agreement = _reason(verdict, "agreement")
    assert (agreement["pairs"], agreement["agreed"]) == (3000, 2940)
    assert agreement["agreement"] == pytest.approx(0.98)
    # Quality of each, from the same labels: stable's 8000 predictions and the shadow's 3000
    # answers to the same inputs, each judged by the label of its event id.
    shadow, stable = world.traffic[("shadowy", "v2")], world.traffic[("shadowy", "v1")]
    precision = _reason(verdict, "precision@fraud")
    assert (precision["candidate_samples"], precision["baseline_samples"]) == (
        shadow.predicted_positive,
        stable.predicted_positive,
    )
    assert precision["candidate"] == pytest.approx(shadow.true_positive / shadow.predicted_positive)
    assert precision["baseline"] == pytest.approx(stable.true_positive / stable.predicted_positive)
    evidence = verdict.to_dict()["evidence"]
    assert evidence["candidate"]["deployments"] == ["shadow"]
    assert (evidence["candidate"]["labelled"], evidence["baseline"]["labelled"]) == (3000, 8000)


def test_a_shadow_that_disagrees_with_stable_rolls_back_with_the_numbers(world: World) -> None:
    verdict = world.gate.verdict("contrary", "v2")
    assert verdict.verdict == "rollback", verdict.summary()
    reason = _reason(verdict, "agreement")
    assert (reason["pairs"], reason["agreed"]) == (3000, 2400)
    assert reason["agreement"] == pytest.approx(0.8)
    assert reason["upper_bound"] < 0.95
    assert "agreement 0.8000 on 3000 joined inputs (limit 0.9500" in reason["message"]
    assert [r.check for r in verdict.reasons if r.status != "pass"] == ["agreement"]


def test_thin_traffic_holds_and_never_rolls_back(world: World) -> None:
    verdict = world.gate.verdict("thin", "v2")
    assert verdict.verdict == "hold"
    assert _reason(verdict, "minimum_events.candidate")["samples"] == 30
    # The candidate does look awful: the reasons say so, and say it is not acted on.
    latency = _reason(verdict, "latency_p99")
    assert latency["status"] == "hold"
    assert latency["ratio"] > 2
    assert latency["message"].endswith("(not acted on: too few events on a side)")
    assert all(reason.status != "rollback" for reason in verdict.reasons)


def test_bad_requests_are_refused(world: World) -> None:
    with pytest.raises(VerdictRequestError, match="unknown model 'nope'") as unknown:
        world.gate.verdict("nope", "v2")
    assert unknown.value.status == 404
    with pytest.raises(VerdictRequestError, match="step '7' is not one of") as step:
        world.gate.verdict("good", "v2", step="7")
    assert step.value.status == 400
    with pytest.raises(VerdictRequestError, match="is the candidate itself"):
        world.gate.verdict("good", "v2", baseline="v2")


def test_the_command_line_prints_the_verdict_and_exits_with_it(world: World) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["verdict", "--config", str(world.config_path), "--json", "precise", "v2"]
    )
    assert result.exit_code == EXIT_CODES["rollback"] == 4, result.output
    answer = json.loads(result.stdout)
    assert answer["verdict"] == "rollback"
    assert answer["evidence"]["candidate"]["events"] == 2500
    result = runner.invoke(main, ["verdict", "--config", str(world.config_path), "thin", "v2"])
    assert result.exit_code == EXIT_CODES["hold"] == 3
    assert result.stdout.startswith("hold: thin v2\n")
    assert "[hold] candidate has 30 events in the long window (< 2000)" in result.stdout


# --- over HTTP: Argo Rollouts' web metric and Flagger's webhooks ---------------------------------

REPO = Path(__file__).resolve().parents[2]
HMAC_SECRET = b"gate-hmac-secret"


@pytest.fixture(scope="module")
def gate_url(world: World) -> Iterator[str]:
    server = serve_gate(
        world.gate,
        "127.0.0.1",
        0,
        token=world.token.encode(),
        hmac_secret=HMAC_SECRET,
        max_body_bytes=world.config.rollout.max_body_bytes,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def expr_lang(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Any], bool] | None:
    """expr-lang itself (the Go module Argo Rollouts evaluates conditions with), if Go is here."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = tmp_path_factory.mktemp("exprcheck") / "exprcheck"
    # The first build fetches the pinned module (go.sum) from the Go module proxy.
    built = subprocess.run(
        [go, "build", "-buildvcs=false", "-o", str(binary), "."],
        cwd=Path(__file__).parent / "expr_lang",
        timeout=300,
        capture_output=True,
    )
    if built.returncode != 0:
        pytest.fail(f"building the expr-lang checker failed: {built.stderr.decode()[-2000:]}")

    def evaluate_with_go(condition: str, result: Any) -> bool:
        done = subprocess.run(
            [str(binary)],
            input=json.dumps([{"condition": condition, "result": result}]).encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        [answer] = json.loads(done.stdout)
        assert "error" not in answer, answer
        value: bool = answer["value"]
        return value

    return evaluate_with_go


def _render(template: str, arguments: dict[str, str]) -> str:
    """Argo's ``{{args.name}}`` substitution."""
    return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: arguments[m.group(1)], template)


def _json_path(path: str, document: Any) -> Any:
    """The ``{$.a.b}`` subset of Kubernetes JSONPath the template uses."""
    match = re.fullmatch(r"\{\$((?:\.[A-Za-z_][\w-]*)*)\}", path)
    assert match is not None, f"unsupported jsonPath {path!r}"
    for key in filter(None, match.group(1).split(".")):
        document = document[key]
    return document


def _argo_phase(success: bool, failure: bool) -> str:
    """utils/evaluate.EvaluateResult of Argo Rollouts, both conditions set."""
    if failure:
        return "Failed"
    return "Successful" if success else "Inconclusive"


def test_the_shipped_analysis_template_reads_real_verdicts_as_argo_rollouts_does(
    world: World, gate_url: str, expr_lang: Callable[[str, Any], bool] | None
) -> None:
    template = yaml.safe_load(
        (REPO / "deploy/argo-rollouts/analysis-template.yaml").read_text(encoding="utf-8")
    )
    [metric] = template["spec"]["metrics"]
    web = metric["provider"]["web"]
    defaults = {arg["name"]: arg.get("value", "") for arg in template["spec"]["args"]}
    expected = {
        ("good", "5"): ("promote", "Successful"),
        ("thin", ""): ("hold", "Inconclusive"),
        ("precise", ""): ("rollback", "Failed"),
    }
    for (model, step), (verdict, phase) in expected.items():
        arguments = {
            **defaults,
            "model": model,
            "candidate": "v2",
            "step": step,
            "driftline-url": gate_url,
            "driftline-token": world.token,
        }
        headers = {h["key"]: _render(h["value"], arguments) for h in web["headers"]}
        status, answer = _http("GET", _render(web["url"], arguments), headers=headers)
        assert status == 200, answer  # every verdict is a 200: non-2xx is an Argo *error*
        result = _json_path(web["jsonPath"], answer)
        assert result == verdict
        evaluators = [expr_subset.evaluate] + ([expr_lang] if expr_lang is not None else [])
        for evaluate in evaluators:
            success = evaluate(metric["successCondition"], result)
            failure = evaluate(metric["failureCondition"], result)
            assert _argo_phase(success, failure) == phase, (evaluate, model)
    # The analysis can end: a rollback fails it at once, promotes complete it, holds wait.
    assert metric["failureLimit"] == 0 and metric["consecutiveSuccessLimit"] >= 1
    assert "count" not in metric
    if expr_lang is None:
        pytest.skip("Go is not installed: conditions checked with the Python subset only")


def _flagger(
    gate_url: str, hook: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    return _http(
        "POST",
        f"{gate_url}/v1/flagger/{hook}",
        body,
        {"Content-Type": "application/json", **(headers or {})},
    )


def test_flagger_webhooks_answer_with_the_status_codes_flagger_expects(
    world: World, gate_url: str
) -> None:
    def payload(name: str, **metadata: str) -> dict[str, Any]:
        # What Flagger sends (CanaryWebhookPayload), with the token it cannot put in a header.
        return {
            "name": name,
            "namespace": "ml",
            "phase": "Progressing",
            "checksum": "6f9c2a",
            "metadata": {"candidate": "v2", "token": world.token, **metadata},
        }

    cases = [
        ("confirm-promotion", "good", 200, "promote"),
        ("confirm-traffic-increase", "good", 200, "promote"),
        ("confirm-promotion", "thin", 403, "hold"),
        ("confirm-promotion", "precise", 403, "rollback"),
        ("rollback", "precise", 200, "rollback"),
        ("rollback", "thin", 403, "hold"),
        ("rollback", "good", 403, "promote"),
    ]
    for hook, model, status, verdict in cases:
        got, answer = _flagger(gate_url, hook, payload(model, step="5" if model == "good" else ""))
        assert (got, answer["verdict"], answer["hook"]) == (status, verdict, hook), model
    # metadata.model names a model other than the canary's name.
    got, answer = _flagger(gate_url, "rollback", payload("fraud-canary", model="slow"))
    assert (got, answer["model"], answer["verdict"]) == (200, "slow", "rollback")
    # The shared webhook authentication works too: a bearer header, or an HMAC of the body.
    anonymous = payload("good", step="5")
    del anonymous["metadata"]["token"]
    body = json.dumps(anonymous).encode()
    assert _flagger(gate_url, "confirm-promotion", anonymous)[0] == 401
    bearer = {"Authorization": f"Bearer {world.token}"}
    assert _flagger(gate_url, "confirm-promotion", anonymous, bearer)[0] == 200
    signed = {"X-Driftline-Signature": sign(HMAC_SECRET, body)}
    assert _flagger(gate_url, "confirm-promotion", anonymous, signed)[0] == 200
    wrong = payload("good")
    wrong["metadata"]["token"] = "not-the-token"
    assert _flagger(gate_url, "confirm-promotion", wrong)[0] == 401
    # Bad payloads are 4xx, and say why.
    no_candidate = payload("good")
    del no_candidate["metadata"]["candidate"]
    got, answer = _flagger(gate_url, "confirm-promotion", no_candidate)
    assert (got, answer) == (400, {"error": "metadata.candidate is required"})
    got, answer = _flagger(gate_url, "confirm-promotion", payload("nope"))
    assert (got, answer) == (404, {"error": "unknown model 'nope'"})
    got, answer = _flagger(gate_url, "confirm-promotion", {"metadata": {}}, bearer)
    assert got == 400 and answer["error"].startswith("not a Flagger webhook payload: name")
    assert _flagger(gate_url, "confirm-rollout", payload("good"))[0] == 404
    # Bodies the JSON parser or an encoder chokes on (they dropped the connection, before the
    # credentials were even checked): 401 without credentials, 400 with.
    url = f"{gate_url}/v1/flagger/rollback"
    surrogate = json.dumps(payload("good", token="\ud800")).encode()
    for body in (b"[" * 1000 + b"]" * 1000, b"1" * 4301, surrogate):
        assert _http("POST", url, body)[0] == 401
        got, answer = _http("POST", url, body, bearer)
        assert got == 400 and ("JSON" in answer["error"] or "UTF-8" in answer["error"])


def test_verdict_endpoint_refuses_bad_requests(world: World, gate_url: str) -> None:
    bearer = {"Authorization": f"Bearer {world.token}"}
    url = f"{gate_url}/v1/verdict"
    assert _http("GET", f"{url}?model=good&candidate=v2")[0] == 401
    assert _http("GET", f"{url}?model=good&candidate=v2", headers=bearer)[0] == 200
    cases = {
        "model=good": (400, "parameter 'candidate' is required"),
        "model=good&candiate=v2": (
            400,
            "unknown parameter 'candiate' (use model, candidate, baseline, step)",
        ),
        "model=good&candidate=v2&candidate=v3": (400, "parameter 'candidate' given twice"),
        "model=good&candidate=v2&step=7": (
            400,
            "step '7' is not one of rollout.models.good.steps ['5']",
        ),
        "model=nope&candidate=v2": (404, "unknown model 'nope'"),
    }
    for query, (status, message) in cases.items():
        assert _http("GET", f"{url}?{query}", headers=bearer) == (status, {"error": message})
    assert _http("GET", f"{gate_url}/v2/verdict", headers=bearer)[0] == 404


def test_driftline_gate_serves_verdicts_and_will_not_start_without_a_secret(
    world: World, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "driftline.cli", "gate", "--config", str(world.config_path)]
    env = {k: v for k, v in os.environ.items() if k != "DRIFTLINE_TEST_GATE_TOKEN"}
    refused = subprocess.run(
        [*command, "--port", "0"], env=env, capture_output=True, timeout=120, cwd=REPO
    )
    assert refused.returncode == 1
    assert b"the gate needs a secret" in refused.stderr
    log_path = tmp_path / "gate.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", "0"],
            env={**env, "DRIFTLINE_TEST_GATE_TOKEN": world.token},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 60
        while not (
            found := re.search(rb"rollout gate on (http://[\d.]+:\d+)", log_path.read_bytes())
        ):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        url = f"{found.group(1).decode()}/v1/verdict?model=slow&candidate=v2"
        status, answer = _http("GET", url, headers={"Authorization": f"Bearer {world.token}"})
        assert (status, answer["verdict"]) == (200, "rollback")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


def test_gating_rules_follow_the_rule_engine_states_saved_in_redis(
    world: World, redis_client: redis.Redis
) -> None:
    data = world.config.model_dump(mode="json")
    data["rules"] = [
        {
            "name": "canary-p99",
            "metric": "driftline_latency_seconds",
            "match": {"quantile": "0.99", "deployment": "canary"},
            "comparison": ">",
            "threshold": 10.0,  # 10 s: never breached by the gate's own reading
            "min_samples": 0,
        }
    ]
    data["rollout"]["models"]["good"]["rules"] = ["canary-p99"]
    config = parse_config(data)
    gate = build_gate(config, world.store)
    key = AlertingKeys(config.redis.key_prefix).engine_state()
    now_ms = int(time.time() * 1000)

    def engine_says(state: str, version: str = "v2", seen_ms_ago: int = 1000) -> str:
        labels = {"model": "good", "version": version, "deployment": "canary", "segment": ""}
        record = {
            "rule": "canary-p99",
            "labels": labels,
            "state": state,
            "active_since_ms": now_ms - 60_000,
            "fired_at_ms": now_ms - 30_000,
            "keep_firing_since_ms": None,
            "last_seen_ms": now_ms - seen_ms_ago,
        }
        redis_client.set(key, json.dumps([record]))  # as EngineStateStore.save writes it
        return gate.verdict("good", "v2").verdict

    assert engine_says("firing") == "rollback"
    assert engine_says("pending") == "hold"
    assert engine_says("firing", seen_ms_ago=600_000) == "promote"  # an evaluator long gone
    assert engine_says("firing", version="v1") == "promote"  # another version's alert
    verdict = gate.verdict("good", "v2")
    assert [r.to_dict()["status"] for r in verdict.reasons if r.check == "rule.canary-p99"] == [
        "pass"
    ]
    # The same rule breached in the gate's own figures, not confirmed by the engine: hold.
    data["rules"][0]["threshold"] = 0.001
    redis_client.delete(key)
    breached = build_gate(parse_config(data), world.store).verdict("good", "v2")
    assert breached.verdict == "hold"
    [reason] = [r for r in breached.reasons if r.check == "rule.canary-p99"]
    assert "not confirmed by the rule engine" in reason.message
