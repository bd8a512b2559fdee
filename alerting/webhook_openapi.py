"""The OpenAPI 3.1 description of the webhook receiver, built from the pydantic payload model.

Served unauthenticated at ``GET /openapi.json`` by ``driftline webhook`` and tested with
schemathesis against the real receiver (``tests/integration/test_webhook_openapi.py``), so the
description and the behaviour cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from alerting.webhook_receiver import PATH, SIGNATURE_HEADER, AlertmanagerPayload

__all__ = ["OPENAPI_PATH", "openapi_document"]

OPENAPI_PATH = "/openapi.json"

_ERROR = {
    "description": "Refused; nothing was changed.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}


def openapi_document() -> dict[str, Any]:
    schema = AlertmanagerPayload.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "driftline webhook receiver",
            "version": "1",
            "description": "Alertmanager (webhook payload version 4) calls it for alerts "
            'labelled action="rollback"; each firing alert is acted on once.',
        },
        "components": {
            "schemas": {"AlertmanagerPayload": schema, **definitions},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "hmac": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": "sha256=<hex HMAC-SHA256 of the body>",
                },
            },
        },
        "paths": {
            PATH: {
                "post": {
                    "operationId": "receiveAlerts",
                    "security": [{"bearer": []}, {"hmac": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AlertmanagerPayload"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Handled: one result per alert (acted, duplicate, "
                            "ignored).",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"results": {"type": "array"}},
                                        "required": ["results"],
                                    }
                                }
                            },
                        },
                        "400": _ERROR,
                        "401": _ERROR,
                        "411": _ERROR,
                        "413": _ERROR,
                        "503": {
                            **_ERROR,
                            "description": "A dependency (Redis) failed; Alertmanager retries.",
                        },
                    },
                }
            },
            "/-/healthy": {
                "get": {
                    "operationId": "healthy",
                    "responses": {
                        "200": {
                            "description": "The receiver is up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"status": {"const": "ok"}},
                                        "required": ["status"],
                                    }
                                }
                            },
                        }
                    },
                }
            },
        },
    }
