"""A local Kowalski and Fritz for the tests: the real ZTF packets behind both services' HTTP APIs.

:class:`FakeServices` runs a threading HTTP server on 127.0.0.1 (port 0) in a thread and
speaks the parts of the two protocols that :mod:`alertvision.data.ingest.kowalski` uses:

- Kowalski ``POST /api/auth`` ({username, password} -> token) and ``POST /api/queries`` (``find``
  on ``ZTF_alerts`` by objectId and ``candidate.programid`` ``$in``, on ``ZTF_alerts_aux`` by
  ``_id``, with the projection applied), ``Authorization: Bearer <token>``;
- Fritz ``GET /api/candidates`` (paged by pageNumber / numPerPage) and ``GET /api/sources/{id}``,
  ``Authorization: token <token>``.

Stamps are served as bson extended JSON, cycling through the canonical ``$binary`` form, the
legacy one and a plain base64 string. Faults are injected per request key (see
:meth:`FakeServices.inject`), and every request is counted per endpoint and per key.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from local_server import LocalHTTPServer

STAMPS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
FAULT_KINDS = ("500", "401", "delay", "broken")


@dataclass
class Fault:
    """A fault served to the next ``times`` requests of a key."""

    kind: str
    times: int = 1
    delay_s: float = 1.0


def encode_stamp(data: bytes, style: int) -> Any:
    """Stamp bytes as Kowalski's JSON may carry them: canonical $binary, legacy $binary or plain base64."""
    text = base64.b64encode(data).decode()
    if style == 0:
        return {"$binary": {"base64": text, "subType": "00"}}
    if style == 1:
        return {"$binary": text, "$type": "00"}
    return text


def _dotted(doc: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return None
        doc = doc[part]
    return doc


def matches(doc: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    """Whether a document passes a find filter (equality and $in on dotted paths)."""
    for path, cond in flt.items():
        value = _dotted(doc, path)
        if isinstance(cond, Mapping) and "$in" in cond:
            if value not in cond["$in"]:
                return False
        elif value != cond:
            return False
    return True


def project(doc: Mapping[str, Any], projection: Mapping[str, Any] | None) -> dict[str, Any]:
    """A document with an inclusion (or exclusion) projection applied to its top-level fields."""
    if not projection:
        return dict(doc)
    included = {k for k, v in projection.items() if v and k != "_id"}
    if included:
        out = {k: v for k, v in doc.items() if k in included}
        if projection.get("_id", 1) and "_id" in doc:
            out["_id"] = doc["_id"]
        return out
    return {k: v for k, v in doc.items() if projection.get(k, 1)}


def alert_documents(packets: Sequence[Mapping[str, Any]], braai_every: int = 2) -> list[dict[str, Any]]:
    """ZTF_alerts documents of the packets (no prv_candidates; every ``braai_every``-th has a braai score)."""
    docs = []
    for i, packet in enumerate(packets):
        doc = {k: v for k, v in packet.items() if k not in ("prv_candidates", *STAMPS)}
        doc["_id"] = packet["candid"]
        for name in STAMPS:
            cutout = dict(packet[name])
            cutout["stampData"] = encode_stamp(cutout["stampData"], i % 3)
            doc[name] = cutout
        if braai_every and i % braai_every == 0:
            doc["classifications"] = {"braai": round(0.5 + i / 100, 4), "acai_h": 0.1}
        docs.append(doc)
    return docs


def aux_documents(packets: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """ZTF_alerts_aux documents: each object's prv_candidates of all its packets, de-duplicated."""
    out: dict[str, dict[str, Any]] = {}
    for packet in packets:
        doc = out.setdefault(
            packet["objectId"], {"_id": packet["objectId"], "prv_candidates": [], "cross_matches": {"Gaia_EDR3": []}}
        )
        seen = {(p["jd"], p["fid"], p.get("candid")) for p in doc["prv_candidates"]}
        for p in packet.get("prv_candidates") or []:
            if (p["jd"], p["fid"], p.get("candid")) not in seen:
                doc["prv_candidates"].append(dict(p))
    return out


class FakeServices:
    """Kowalski and Fritz on one local port, serving the given packets and Fritz records."""

    def __init__(
        self,
        packets: Sequence[Mapping[str, Any]],
        *,
        kowalski_token: str,
        fritz_token: str,
        username: str = "user",
        password: str = "pass",
        candidates: Sequence[str] = (),
        fritz_sources: Mapping[str, list[dict[str, Any]]] | None = None,
        echo_credentials: bool = True,
    ):
        self.alerts = alert_documents(packets)
        self.aux = aux_documents(packets)
        self.kowalski_tokens = {kowalski_token}
        self.fritz_token = fritz_token
        self.username, self.password = username, password
        self.issued_token = "issued-" + kowalski_token[::-1]
        self.candidates = list(candidates)
        self.fritz_sources = dict(fritz_sources or {})
        self.echo_credentials = echo_credentials
        self.counts: Counter = Counter()
        self.faults: dict[str, list[Fault]] = {}
        self.revoke_after: int | None = None
        self.alert_queries_answered = 0
        self.lock = threading.Lock()
        self._server: LocalHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeServices:
        """Listen on a free local port in a background thread."""
        self._server = LocalHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.app = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, key: str, kind: str, times: int = 1, delay_s: float = 1.0) -> None:
        """Serve ``kind`` (500, 401, delay, broken) to the next ``times`` requests of ``key``.

        Keys: ``auth``, ``ZTF_alerts:<objectId>``, ``ZTF_alerts_aux:<objectId>``,
        ``candidates:<page>``, ``sources:<objectId>``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {FAULT_KINDS}")
        with self.lock:
            self.faults.setdefault(key, []).append(Fault(kind, times, delay_s))

    def revoke_kowalski(self, after_alert_queries: int | None) -> None:
        """Answer 401 to every Kowalski query once this many ZTF_alerts queries were answered (None: never)."""
        with self.lock:
            self.revoke_after = after_alert_queries
            self.alert_queries_answered = 0

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()

    def total_requests(self) -> int:
        """Requests received, all endpoints together."""
        with self.lock:
            return sum(v for k, v in self.counts.items() if k.startswith("endpoint:"))

    def count(self, key: str) -> int:
        with self.lock:
            return self.counts[key]

    # ---- used by the handler

    def arrive(self, endpoint: str, key: str) -> Fault | None:
        """Count a request; the fault to serve it, if one is pending for its key."""
        with self.lock:
            self.counts[f"endpoint:{endpoint}"] += 1
            self.counts[key] += 1
            pending = self.faults.get(key)
            if not pending:
                return None
            fault = pending[0]
            fault.times -= 1
            if fault.times <= 0:
                pending.pop(0)
            return fault

    def find(self, catalog: str, flt: Mapping[str, Any], projection: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The documents of a find query."""
        if catalog == "ZTF_alerts":
            docs = [d for d in self.alerts if matches(d, flt)]
        elif catalog == "ZTF_alerts_aux":
            docs = [d for d in self.aux.values() if matches(d, flt)]
        else:
            raise KeyError(catalog)
        return [project(d, projection) for d in docs]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def app(self) -> FakeServices:
        return self.server.app  # type: ignore[attr-defined]

    # ---- responses

    def _send(self, status: int, obj: Any, fault: Fault | None = None) -> None:
        body = json.dumps(obj).encode()
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if fault is not None and fault.kind == "broken":
                self._send_broken(body)
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client hung up (it timed out)

    def _send_broken(self, body: bytes) -> None:
        """Promise more bytes than are sent, then close the connection."""
        self.send_header("Content-Length", str(len(body) + 1000))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"status": "error", "message": message})

    def _apply_fault(self, fault: Fault | None) -> bool:
        """Serve a 500 or 401 fault; True when the request is answered."""
        if fault is not None and fault.kind == "500":
            self._error(500, "internal server error (injected)")
            return True
        if fault is not None and fault.kind == "401":
            self._error(401, "token revoked (injected)")
            return True
        return False

    def _unauthorized(self, scheme: str, valid: set[str]) -> bool:
        """Answer 401 (echoing what was sent, as careless servers do) unless the header is valid."""
        header = self.headers.get("Authorization", "")
        if header in {f"{scheme} {t}" for t in valid}:
            return False
        echo = f": {header}" if self.app.echo_credentials and header else ""
        self._error(401, f"invalid or missing token{echo}")
        return True

    def _json_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    # ---- Kowalski

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            body = self._json_body()
        except ValueError:
            self._error(400, "body is not JSON")
            return
        if path == "/api/auth":
            self._auth(body)
        elif path == "/api/queries":
            self._queries(body)
        else:
            self._error(404, f"no route {path}")

    def _auth(self, body: Any) -> None:
        fault = self.app.arrive("auth", "auth")
        if self._apply_fault(fault):
            return
        if not isinstance(body, Mapping) or (body.get("username"), body.get("password")) != (
            self.app.username,
            self.app.password,
        ):
            echo = f" for {body!r}" if self.app.echo_credentials else ""
            self._error(401, f"wrong credentials{echo}")
            return
        with self.app.lock:
            self.app.kowalski_tokens.add(self.app.issued_token)
        self._send(200, {"status": "success", "token": self.app.issued_token}, fault)

    def _queries(self, body: Any) -> None:
        query = (body or {}).get("query") or {}
        catalog, flt = query.get("catalog"), query.get("filter") or {}
        oid = flt.get("objectId", flt.get("_id"))
        fault = self.app.arrive("queries", f"{catalog}:{oid}")
        if self._apply_fault(fault) or self._unauthorized("Bearer", self.app.kowalski_tokens):
            return
        with self.app.lock:
            revoked = self.app.revoke_after is not None and self.app.alert_queries_answered >= self.app.revoke_after
        if revoked:
            self._error(401, "token revoked")
            return
        if body.get("query_type") != "find":
            self._error(400, f"unsupported query_type {body.get('query_type')!r}")
            return
        try:
            data = self.app.find(catalog, flt, query.get("projection"))
        except KeyError:
            self._error(400, f"unknown catalog {catalog!r}")
            return
        if catalog == "ZTF_alerts":
            with self.app.lock:
                self.app.alert_queries_answered += 1
        self._send(200, {"status": "success", "message": "Successfully executed query", "data": data}, fault)

    # ---- Fritz

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/api/candidates":
            self._candidates(params)
        elif parts.path.startswith("/api/sources/"):
            self._source(parts.path.rsplit("/", 1)[-1])
        else:
            self._error(404, f"no route {parts.path}")

    def _candidates(self, params: Mapping[str, str]) -> None:
        page, per_page = int(params.get("pageNumber", 1)), int(params.get("numPerPage", 25))
        fault = self.app.arrive("candidates", f"candidates:{page}")
        if self._apply_fault(fault) or self._unauthorized("token", {self.app.fritz_token}):
            return
        if params.get("savedStatus") != "notSavedToAnySelected" or not params.get("groupIDs"):
            self._error(400, "savedStatus=notSavedToAnySelected needs groupIDs")
            return
        with self.app.lock:
            self.app.counts[f"candidates_params:{json.dumps(dict(sorted(params.items())))}"] += 1
        chunk = self.app.candidates[(page - 1) * per_page : page * per_page]
        data = {
            "candidates": [{"id": oid, "ra": 10.0, "dec": 20.0} for oid in chunk],
            "totalMatches": len(self.app.candidates),
            "pageNumber": page,
            "numPerPage": per_page,
        }
        self._send(200, {"status": "success", "data": data}, fault)

    def _source(self, oid: str) -> None:
        fault = self.app.arrive("sources", f"sources:{oid}")
        if self._apply_fault(fault) or self._unauthorized("token", {self.app.fritz_token}):
            return
        if oid not in self.app.fritz_sources:
            self._error(404, f"Invalid source ID: {oid}")
            return
        data = {
            "id": oid,
            "ra": 10.0,
            "dec": 20.0,
            "groups": self.app.fritz_sources[oid],
            "photometry": [],
            "comments": [],
        }
        self._send(200, {"status": "success", "data": data}, fault)
