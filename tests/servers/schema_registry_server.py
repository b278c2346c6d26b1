"""A local schema registry speaking the registry API's ``GET /schemas/ids/<id>`` on 127.0.0.1, with faults the
tests switch on: HTTP 500 answers, an answer that never comes (a timeout), a truncated body."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from local_server import LocalHTTPServer


class SchemaRegistryServer:
    """Serves ``schemas`` (id -> schema as plain data); ``fail_500`` answers 500 that many times first,
    ``hang`` holds every answer until :meth:`close`, ``truncate`` promises more bytes than it sends."""

    def __init__(self, schemas: dict[int, Any]):
        self.schemas = schemas
        self.fail_500 = 0
        self.hang = False
        self.truncate = False
        self.requests: list[str] = []
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.hang:
                    outer._release.wait(30)
                    return
                if outer.fail_500 > 0:
                    outer.fail_500 -= 1
                    self._send(500, b'{"message": "internal error"}')
                    return
                prefix = "/schemas/ids/"
                sid = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                if not sid.isdigit() or int(sid) not in outer.schemas:
                    self._send(404, b'{"error_code": 40403, "message": "Schema not found"}')
                    return
                body = json.dumps({"schema": json.dumps(outer.schemas[int(sid)])}).encode()
                if outer.truncate:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, body)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LocalHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
