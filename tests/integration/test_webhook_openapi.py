"""The webhook receiver against its own OpenAPI description, with schemathesis.

Generated requests (valid and invalid payloads, with and without credentials) hit the real
receiver on real Redis: every answer must be documented and match its schema, no request may
produce a 5xx, and no log line may carry the secret. (schemathesis' strategies are driven with
hypothesis directly: its pytest plugin does not load under pytest 9.)
"""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from alerting.webhook_openapi import openapi_document
from tests.integration.test_webhook_receiver import TOKEN, Receiver, receiver  # noqa: F401

EXAMPLES_PER_OPERATION = 150


def test_receiver_conforms_to_its_openapi_description(
    receiver: Receiver,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.config.update(base_url=f"http://127.0.0.1:{receiver.port}")
    statuses: set[int] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} == {
        "POST /v1/alertmanager",
        "GET /-/healthy",
    }

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            authorised = case.call(headers={"Authorization": f"Bearer {TOKEN.decode()}"})
            # A schema-valid body larger than max_body_bytes is refused with the documented 413:
            # the byte limit is a server setting OpenAPI cannot express.
            excluded = [checks.positive_data_acceptance] if authorised.status_code == 413 else []
            case.validate_response(authorised, excluded_checks=excluded)
            statuses.add(authorised.status_code)
            if case.method == "POST":
                anonymous = case.call(headers={"Authorization": "Bearer not-the-token"})
                assert anonymous.status_code in (401, 411, 413), anonymous.status_code

        exercise()

    assert 200 in statuses and statuses <= {200, 400, 401, 411, 413}, statuses
    assert TOKEN.decode() not in caplog.text, "a secret reached the log"


def test_the_description_is_served(receiver: Receiver) -> None:  # noqa: F811
    with urllib.request.urlopen(f"http://127.0.0.1:{receiver.port}/openapi.json") as response:
        assert response.status == 200
        assert json.loads(response.read()) == openapi_document()
