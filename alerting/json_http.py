"""The JSON-over-HTTP request handling the webhook receiver and the rollout gate share."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

__all__ = ["JsonRequestHandler", "json_body"]

log = logging.getLogger(__name__)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """Answers in JSON over keep-alive HTTP/1.1; refusals are ``{"error": ...}`` with a 4xx."""

    protocol_version = "HTTP/1.1"
    # Names the server in the refusal log line ("webhook: 400 ...").
    log_name = "http"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(
        self,
        status: int,
        body: Mapping[str, Any],
        close: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = json.dumps(body, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only
            self.wfile.write(data)

    def _refuse(
        self,
        status: HTTPStatus,
        message: str,
        close: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        log.info("%s: %d %s", self.log_name, status.value, message)
        self.count_refusal(status)
        self._answer(status.value, {"error": message}, close=close, headers=headers)

    def count_refusal(self, status: HTTPStatus) -> None:
        """Called with every refusal; a server that counts them overrides it."""

    def _method_not_allowed(self) -> None:
        allowed = ", ".join(m for m in ("GET", "POST") if hasattr(self, f"do_{m}"))
        message = f"method {self.command} not allowed"
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, message, close=True, headers={"Allow": allowed})

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _method_not_allowed

    def _headers(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items()}

    def _read_body(self, max_bytes: int) -> bytes | None:
        """The request body, or None after refusing it (no length, a bad one, or too long).

        A refused body is never read, so the connection is closed rather than reused.
        """
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required", close=True)
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True)
            return None
        if length > max_bytes:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {max_bytes} bytes", close=True
            )
            return None
        return self.rfile.read(length)


def json_body(body: bytes) -> object:
    """The parsed request body; ``ValueError`` with the reason when a server cannot use it:
    malformed, nested past the parser's recursion limit, an integer of more than 4,300 digits, or
    holding a string that is not UTF-8 (a lone surrogate escape, which neither Redis nor an
    audit log can store)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSON and Unicode decode errors are values
        raise ValueError(f"body is not JSON: {error}") from None
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("body holds a string that is not valid UTF-8 (a lone surrogate)") from None
    return data
