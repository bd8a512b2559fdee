"""Quality figures from real windows: segment disparity (four-fifths), canary against stable, and
the label-free accuracy estimate following a model whose accuracy falls from 0.95 to 0.85.

Traffic goes through real Kafka and Redis and both consumers; expectations are computed directly
from the generated ground truth (and statsmodels for the test statistics).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from click.testing import CliRunner
from statsmodels.stats.proportion import proportions_ztest

from alerting import metric_names as names
from alerting.evaluator import Evaluator
from alerting.quality_figures import QualityFigures, QualityReferences
from alerting.snapshot import Snapshot, SnapshotCollector
from detectors.window_store import WindowStore
from driftline.cli import main
from driftline.config import Config
from tests.conftest import produce, write_config
from tests.integration.quality_traffic import (
    Expected,
    Prediction,
    consume_events,
    consume_labels,
    label_message,
    store_for,
)

POSITIVE = "fraud"


def _tick(config: Config, store: WindowStore, now_ms: int) -> Snapshot:
    references = QualityReferences(store, refresh_s=0.0)
    quality = QualityFigures(config, store, references.reference)
    evaluator = Evaluator(
        config,
        store,
        SnapshotCollector(),
        contributors=[quality],
        hooks=[quality],
        clock_ms=lambda: now_ms,
    )
    return evaluator.tick()


def _send(config: Config, bootstrap: str, model: str, predictions: list[Prediction]) -> None:
    produce(bootstrap, config.topics.events, [p.event(model) for p in predictions])
    # Labels carry only the event id and the truth: the join finds the rest.
    produce(
        bootstrap,
        config.topics.labels,
        [label_message(p.event_id, p.truth, p.ts_ms + 1000) for p in predictions],
    )


def test_a_segment_losing_precision_crosses_four_fifths_and_canary_is_compared(
    stack_config: Callable[..., Config], kafka_bootstrap: str, redis_client: redis.Redis
) -> None:
    config = stack_config(
        partitions=2,
        models={"fraud": {"segments": ["region"], "labels": {"positive_classes": [POSITIVE]}}},
    )
    now_ms = int(time.time() * 1000)
    generator = np.random.default_rng(21)
    run = uuid.uuid4().hex[:6]
    # Precision of a predicted fraud: 0.9 in every region but apac (0.6); "tiny" has 10 events.
    plan = [("v1", "stable", region, 2000, 0.9) for region in ("eu", "us", "latam")]
    plan += [("v1", "stable", "apac", 2000, 0.6), ("v1", "stable", "tiny", 10, 0.9)]
    plan += [("v2", "canary", "eu", 1500, 0.8)]
    predictions: list[Prediction] = []
    for version, deployment, region, count, precision in plan:
        for index in range(count):
            said = POSITIVE if generator.random() < 0.4 else "legit"
            right = generator.random() < (precision if said == POSITIVE else 0.9)
            predictions.append(
                Prediction(
                    event_id=f"{run}-{version}-{region}-{index}",
                    ts_ms=now_ms - 250_000 + int(generator.integers(0, 240_000)),
                    version=version,
                    deployment=deployment,
                    confidence=0.9,
                    prediction=said,
                    truth=said if right else ("legit" if said == POSITIVE else POSITIVE),
                    region=region,
                )
            )
    expected = Expected()
    for prediction in predictions:
        expected.add(prediction, POSITIVE)
    _send(config, kafka_bootstrap, "fraud", predictions)
    store = store_for(config, redis_client)
    consume_events(config, store, "fraud", len(predictions))
    consume_labels(config, store, ["fraud"], len(predictions))

    snapshot = _tick(config, store, now_ms)
    base = {"model": "fraud", "version": "v1", "deployment": "stable", "window": "short"}
    precision = {"figure": "precision", "class": POSITIVE}
    ratios = {
        region: snapshot.value(
            names.DISPARITY_RATIO, **base, segment=f"region={region}", **precision
        )
        for region in ("eu", "us", "latam", "apac")
    }
    direct = {}
    for region in ("eu", "us", "latam", "apac"):
        counts = expected.counts[f"v1|stable|region={region}"]
        tp, fp = counts[f"true_positive@{POSITIVE}"], counts[f"false_positive@{POSITIVE}"]
        direct[region] = tp / (tp + fp)
    best = max(direct.values())
    for region, ratio in ratios.items():
        assert ratio is not None and abs(ratio - direct[region] / best) < 1e-12
    assert ratios["apac"] < 0.8, ratios
    assert all(ratios[region] >= 0.8 for region in ("eu", "us", "latam")), ratios
    tiny = {**base, "segment": "region=tiny", **precision}
    assert snapshot.value(names.DISPARITY_NODATA, **tiny) == 1.0
    assert snapshot.value(names.DISPARITY_RATIO, **tiny) is None

    # Canary v2 against all stable traffic, same window: difference and the z-test p-value.
    canary = expected.counts["v2|canary|"]
    stable = expected.counts["v1|stable|"]
    tp_c, pp_c = (
        canary[f"true_positive@{POSITIVE}"],
        (canary[f"true_positive@{POSITIVE}"] + canary[f"false_positive@{POSITIVE}"]),
    )
    tp_s, pp_s = (
        stable[f"true_positive@{POSITIVE}"],
        (stable[f"true_positive@{POSITIVE}"] + stable[f"false_positive@{POSITIVE}"]),
    )
    comparison = {
        "model": "fraud",
        "version": "v2",
        "deployment": "canary",
        "window": "short",
        "figure": "precision",
        "class": POSITIVE,
    }
    difference = snapshot.value(names.CANARY_DIFFERENCE, **comparison)
    assert difference is not None and abs(difference - (tp_c / pp_c - tp_s / pp_s)) < 1e-12
    _, p_value = proportions_ztest([tp_c, tp_s], [pp_c, pp_s])
    assert abs(snapshot.value(names.CANARY_P_VALUE, **comparison) - p_value) < 1e-9


def _calibrated_phase(
    generator: np.random.Generator,
    run: str,
    name: str,
    count: int,
    alpha: float,
    beta: float,
    start_ms: int,
    span_ms: int,
) -> list[Prediction]:
    """A calibrated model: confidence c ~ Beta(alpha, beta), right with probability c."""
    confidence = generator.beta(alpha, beta, count)
    right = generator.random(count) < confidence
    said = generator.random(count) < 0.5
    return [
        Prediction(
            event_id=f"{run}-{name}-{i}",
            ts_ms=start_ms + int(generator.integers(0, span_ms)),
            version="v1",
            deployment="stable",
            confidence=round(float(confidence[i]), 4),
            prediction="yes" if said[i] else "no",
            truth=("yes" if said[i] else "no") if right[i] else ("no" if said[i] else "yes"),
            region="eu",
        )
        for i in range(count)
    ]


ESTIMATE_ERROR = 0.02
"""The label-free estimate's error this test allows (and docs/quality.md states): on 20,000
predictions per phase the measured accuracy alone has a standard error of about 0.0025."""


def test_label_free_estimate_follows_accuracy_falling_from_095_to_085(
    stack_config: Callable[..., Config],
    kafka_bootstrap: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = stack_config(
        partitions=2,
        windows={"long_seconds": 4 * 3600},
        models={"scorer": {"labels": {"positive_classes": ["yes"]}}},
    )
    now_ms = int(time.time() * 1000)
    hour_ms = 3_600_000
    generator = np.random.default_rng(31)
    run = uuid.uuid4().hex[:6]
    reference = _calibrated_phase(
        generator, run, "ref", 20_000, 19.0, 1.0, now_ms - 3 * hour_ms, hour_ms - 120_000
    )
    later = _calibrated_phase(generator, run, "now", 20_000, 8.5, 1.5, now_ms - 280_000, 270_000)
    predictions = reference + later
    _send(config, kafka_bootstrap, "scorer", predictions)
    store = store_for(config, redis_client)
    consume_events(config, store, "scorer", len(predictions))
    consume_labels(config, store, ["scorer"], len(predictions))

    reference_end_ms = now_ms - 2 * hour_ms
    result = CliRunner().invoke(
        main,
        [
            "calibrate",
            "--config",
            str(write_config(config, tmp_path)),
            "--model",
            "scorer",
            "--at",
            str(reference_end_ms),
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"labelled": 20000' in result.output

    def accuracy(phase: list[Prediction]) -> float:
        return float(np.mean([p.prediction == p.truth for p in phase]))

    series = {"model": "scorer", "version": "v1", "deployment": "stable", "segment": ""}
    then = _tick(config, store, reference_end_ms)
    estimated_then = then.value(names.ESTIMATED_ACCURACY, **series, window="long")
    assert then.value(names.ACCURACY, **series, window="long") == accuracy(reference)
    now = _tick(config, store, now_ms)
    estimated_now = now.value(names.ESTIMATED_ACCURACY, **series, window="short")
    assert now.value(names.ACCURACY, **series, window="short") == accuracy(later)
    errors = (estimated_then - accuracy(reference), estimated_now - accuracy(later))
    print(
        f"reference: measured {accuracy(reference):.4f} estimated {estimated_then:.4f}; "
        f"later: measured {accuracy(later):.4f} estimated {estimated_now:.4f}"
    )
    assert accuracy(reference) > 0.94 and accuracy(later) < 0.86
    assert all(abs(error) <= ESTIMATE_ERROR for error in errors), errors
