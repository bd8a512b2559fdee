"""A local HTTP server that records every request, for tests of outgoing webhooks and APIs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Recorded], tuple[int, bytes]]


class RecordingServer:
    """Answers with ``respond(request)`` (default 200 ``{}``) and keeps every request."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.requests: list[Recorded] = []
        self.respond: Responder = respond or (lambda request: (200, b"{}"))
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                with recorder._lock:
                    recorder.requests.append(request)
                status, body = recorder.respond(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def received(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                request
                for request in self.requests
                if (method is None or request.method == method)
                and (path is None or request.path == path)
            ]


@contextmanager
def recording_server(respond: Responder | None = None) -> Iterator[RecordingServer]:
    recorder = RecordingServer(respond)
    thread = threading.Thread(target=recorder.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.server.shutdown()
        recorder.server.server_close()
