"""JSON over HTTP for the Kowalski and Fritz clients: retries, timeouts, a request rate, no leaked secrets.

One :class:`JsonClient` per service wraps a ``urllib3.PoolManager``. Every request is made with
``preload_content=True``, so the whole body is read inside ``urlopen``: a body that breaks
mid-way (fewer bytes than its Content-Length, the connection closed) surfaces there as a
``ProtocolError`` and is retried by the ``urllib3.util.Retry`` object like a read timeout or a
5xx answer. Queries are read-only, so POSTs are retried too (``allowed_methods=None``).

Credentials come from the environment only. They travel in the ``Authorization`` header, which
is never logged; every text formatted from a server's answer goes through a :class:`Redactor`
that blanks the known secrets and anything that looks like a token, so that neither exception
messages nor log records can carry one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.util import Retry, parse_url

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
AUTH_STATUSES = (401, 403)
REDACTED = "[REDACTED]"
#: Text of an answer quoted in an error message, at most.
SNIPPET_CHARS = 300
_TOKEN_PATTERNS = (
    re.compile(r"(?i)\b(bearer|token)(\s+|\s*[:=]\s*[\"']?)([A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(?i)([\"'](?:token|access_token|password|authorization)[\"']\s*:\s*[\"'])([^\"']*)"),
)


class HttpError(RuntimeError):
    """A request that failed for good (after its retries), or an answer that is not the JSON expected."""


class AuthError(HttpError):
    """A service refused the credentials (HTTP 401 / 403); never retried."""


class Redactor:
    """Blank known secrets, and anything shaped like a token, out of a text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Remember a secret (a token, a password) to blank wherever it shows up."""
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    @property
    def secrets(self) -> frozenset[str]:
        """The secrets known so far."""
        with self._lock:
            return frozenset(self._secrets)

    def __call__(self, text: Any) -> str:
        """``text`` as a string with the known secrets and token-like words replaced."""
        text = str(text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        text = _TOKEN_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        return _TOKEN_PATTERNS[1].sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class RateLimiter:
    """At most ``rate_per_s`` request starts per second, across all threads that share it.

    Starts are spaced ``1 / rate_per_s`` seconds apart: each caller books the next free slot
    under a lock and sleeps until it outside the lock.
    """

    def __init__(
        self,
        rate_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.interval = 1.0 / float(rate_per_s)
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return delay


class _PacedRetry(Retry):
    """A ``Retry`` that calls a hook before each retried attempt (to pace and count retries), and
    that takes an answer ``final_when`` recognises (say an error that will not change) as final."""

    on_retry: Callable[[Retry], None] | None = None
    final_when: Callable[[urllib3.BaseHTTPResponse], bool] | None = None

    def new(self, **kw: Any) -> _PacedRetry:
        retry = super().new(**kw)
        retry.on_retry = self.on_retry
        retry.final_when = self.final_when
        return retry

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kw: Any) -> Retry:
        response = kw.get("response")
        if response is not None and self.final_when is not None and self.final_when(response):
            # with raise_on_status=False, urlopen hands this response back instead of retrying
            raise MaxRetryError(kw.get("_pool"), url or "", None)
        return super().increment(method, url, *args, **kw)

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        if self.on_retry is not None:
            self.on_retry(self)


#: credentials(client) -> the Authorization header value; raises where none can be had.
Credentials = Callable[["JsonClient"], str]


class JsonClient:
    """JSON requests to one service, with retries, timeouts, a rate limit and redacted errors."""

    def __init__(
        self,
        base_url: str,
        service: str,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        rate_per_s: float,
        redactor: Redactor,
        credentials: Credentials | None = None,
        credential_hint: str = "",
        pool_size: int = 4,
        final_when: Callable[[urllib3.BaseHTTPResponse], bool] | None = None,
    ):
        url = parse_url(base_url.rstrip("/"))
        self.base_url = url._replace(auth=None).url  # credentials never ride in the URL
        self.service = service
        self.redact = redactor
        self.credentials = credentials
        self.credential_hint = credential_hint
        self.limiter = RateLimiter(rate_per_s)
        self.stats: Counter = Counter()
        self._stats_lock = threading.Lock()
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=max(1, pool_size))
        self._refused: AuthError | None = None
        self._final_when = final_when

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _retry(self) -> _PacedRetry:
        """A fresh retry policy: 5xx/429, timeouts and broken bodies, any method, Retry-After respected."""
        retry = _PacedRetry(
            total=self._retries,
            connect=self._retries,
            read=self._retries,
            status=self._retries,
            other=0,
            backoff_factor=self._backoff_s,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        retry.on_retry = self._on_retry
        retry.final_when = self._final_when
        return retry

    def _on_retry(self, retry: Retry) -> None:
        """Count and pace a retried attempt (it is a request start like any other)."""
        self._count("retries")
        last = retry.history[-1] if retry.history else None
        why = (
            f"HTTP {last.status}"
            if last is not None and last.status
            else (type(last.error).__name__ if last is not None and last.error is not None else "unknown")
        )
        log.info("%s: retrying %s after %s", self.service, self.redact(last.url if last else "?"), why)
        self.limiter.wait()

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """GET ``path`` with query ``params``; the decoded JSON answer."""
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        """POST ``body`` as JSON to ``path``; the decoded JSON answer."""
        return self.request("POST", path, body=body, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        authenticate: bool = True,
        missing_ok: bool = False,
    ) -> Any:
        """One JSON request; returns the decoded answer, or None for a 404 when ``missing_ok``.

        Raises :class:`AuthError` on 401/403 and :class:`HttpError` on any other failure.
        """
        resp = self.request_raw(method, path, params=params, body=body, authenticate=authenticate)
        return self._decode(resp, f"{self.service} {method} {path}", missing_ok)

    def request_raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        authenticate: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """One request after its retries: the last answer, whatever its status (body read whole).

        Raises :class:`AuthError` once the credentials were refused, and :class:`HttpError` where no
        answer came (connection errors, timeouts or broken bodies after the last retry).
        """
        if self._refused is not None:
            raise AuthError(str(self._refused))  # the credentials were refused: ask nothing more
        headers = {"Accept": "application/json"}
        if authenticate and self.credentials is not None:
            headers["Authorization"] = self.credentials(self)
        what = f"{self.service} {method} {path}"
        self.limiter.wait()
        self._count("requests")
        try:
            resp = self._pool.request(
                method,
                self.base_url + path,
                fields=params,
                json=body,
                headers=headers,
                retries=self._retry(),
                timeout=self._timeout,
                preload_content=True,
            )
        except MaxRetryError as exc:
            self._count("failures")
            raise HttpError(f"{what}: gave up after {self._retries} retries: {self.redact(_reason(exc))}") from None
        except Urllib3Error as exc:
            self._count("failures")
            raise HttpError(f"{what}: {type(exc).__name__}: {self.redact(exc)}") from None
        return resp

    def _decode(self, resp: urllib3.BaseHTTPResponse, what: str, missing_ok: bool) -> Any:
        """The JSON of an answer, or the error it stands for."""
        status = resp.status
        if status in AUTH_STATUSES:
            self._count("failures")
            hint = f"; set {self.credential_hint}" if self.credential_hint else ""
            self._refused = AuthError(
                f"{self.service} refused the credentials (HTTP {status}) for {what}{hint}: {self._snippet(resp.data)}"
            )
            raise self._refused
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            self._count("failures")
            retried = " after retries" if status in RETRY_STATUSES else ""
            raise HttpError(f"{what}: HTTP {status}{retried}: {self._snippet(resp.data)}")
        try:
            return json.loads(resp.data)
        except ValueError:
            self._count("failures")
            raise HttpError(f"{what}: the answer is not JSON: {self._snippet(resp.data)}") from None

    def _snippet(self, data: bytes | None) -> str:
        """The start of an answer's body, redacted, for an error message."""
        text = (data or b"").decode("utf-8", errors="replace").strip()
        try:
            message = json.loads(text).get("message")
            text = str(message) if message else text
        except (ValueError, AttributeError):
            pass
        text = self.redact(text)
        return (text[:SNIPPET_CHARS] + "...") if len(text) > SNIPPET_CHARS else (text or "(empty body)")

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()


def _reason(exc: MaxRetryError) -> str:
    """What finally broke a request, without the pool's address noise."""
    reason = exc.reason
    return f"{type(reason).__name__}: {reason}" if reason is not None else str(exc)
