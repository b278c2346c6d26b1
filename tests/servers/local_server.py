"""The HTTP server class the local protocol servers of the tests share."""

from __future__ import annotations

from http.server import ThreadingHTTPServer
from typing import Any


class LocalHTTPServer(ThreadingHTTPServer):
    """A threading server on 127.0.0.1 whose handler threads die with the tests, and which keeps quiet
    about clients that hang up mid-answer (timeouts and truncated bodies are faults the tests inject)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass
