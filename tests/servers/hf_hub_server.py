"""A local Hugging Face Hub for tests: enough of the real protocol for huggingface_hub's downloads.

Serves model repos from a dict ``{repo_id: {filename: bytes}}`` on 127.0.0.1 (random port, one
thread per request), the way huggingface.co answers ``snapshot_download`` and ``hf_hub_download``:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info JSON with
  ``id``, ``sha`` (the commit) and ``siblings`` ``[{"rfilename": ...}]``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the file listing (``type``, ``path``, ``size``,
  ``oid``, and ``lfs`` ``{oid, size, pointerSize}`` for LFS files), one page;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{filename}``: a small (non-LFS) file answers 200 with
  ``ETag`` (its git blob id), ``X-Repo-Commit`` and ``Content-Length``; an LFS file (``.bin``,
  ``.safetensors``) answers 302 to a "CDN" on another origin (``localhost`` instead of
  ``127.0.0.1``, so the client does not follow the HEAD there), with ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``;
- ``HEAD``/``GET /cdn/{sha256}``: the LFS file's bytes, with ``Range`` support (206).

Errors as the Hub sends them: an unknown repo 401 ``X-Error-Code: RepoNotFound``, an unknown
revision 404 ``RevisionNotFound``, an unknown file 404 ``EntryNotFound`` (with ``X-Repo-Commit``).

Failure modes, switched with :meth:`LocalHub.fail` (``only`` limits one to paths containing a string):
``"500"`` (Internal Server Error), ``"401"`` (a gated repo, the Hub's headers and body), ``"timeout"``
(answers after ``delay`` seconds, longer than the client's timeout), ``"truncate"`` (file bodies:
the full ``Content-Length``, then half the bytes and a closed connection; a resumed ``Range``
request gets nothing more).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from typing import Mapping
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".h5", ".onnx")
GATED_MESSAGE = (
    "Access to model {repo} is restricted. You must have access to it and be authenticated to access it. Please log in."
)


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's bytes (what the Hub sends as a small file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file the repo stores in place of a large file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    ).encode()


class Repo:
    """One model repo at one commit."""

    def __init__(self, repo_id: str, files: Mapping[str, bytes]):
        self.repo_id = repo_id
        self.files = dict(files)
        ids = "".join(f"{name}:{git_blob_id(data)}\n" for name, data in sorted(self.files.items()))
        self.commit = hashlib.sha1(f"{repo_id}\n{ids}".encode()).hexdigest()

    @staticmethod
    def is_lfs(filename: str) -> bool:
        return filename.endswith(LFS_SUFFIXES)

    def tree(self) -> list[dict]:
        entries = []
        for name, data in sorted(self.files.items()):
            if self.is_lfs(name):
                pointer = lfs_pointer(data)
                entries.append(
                    {
                        "type": "file",
                        "path": name,
                        "size": len(data),
                        "oid": git_blob_id(pointer),
                        "lfs": {
                            "oid": hashlib.sha256(data).hexdigest(),
                            "size": len(data),
                            "pointerSize": len(pointer),
                        },
                    }
                )
            else:
                entries.append({"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)})
        return entries

    def info(self) -> dict:
        return {
            "_id": self.commit[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "timm",
            "tags": ["timm", "image-classification"],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in sorted(self.files)],
        }


class LocalHub:
    """The server; ``url`` is its endpoint. Use as a context manager, or call :meth:`close`."""

    def __init__(self, repos: Mapping[str, Mapping[str, bytes]], cdn_host: str = "localhost"):
        self.repos = {repo_id: Repo(repo_id, files) for repo_id, files in repos.items()}
        self.blobs = {
            hashlib.sha256(data).hexdigest(): data for repo in self.repos.values() for data in repo.files.values()
        }
        self.cdn_host = cdn_host
        self.requests: list[tuple[str, str]] = []
        self.mode: str | None = None
        self.only: str | None = None
        self.delay = 5.0
        self._closing = threading.Event()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def fail(self, mode: str | None, only: str | None = None, delay: float = 5.0) -> None:
        """Switch a failure mode on (``"500"``, ``"401"``, ``"timeout"``, ``"truncate"``) or off (None)."""
        if mode not in (None, "500", "401", "timeout", "truncate"):
            raise ValueError(f"unknown failure mode {mode!r}")
        self.mode, self.only, self.delay = mode, only, delay

    def close(self) -> None:
        self._closing.set()  # wakes handlers still sleeping in "timeout" mode
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "LocalHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.0"  # one request per connection: a truncated body ends with the close

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server API
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._serve(body=True)

    # --- routing ---------------------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        hub = self.hub
        path = unquote(urlsplit(self.path).path)
        hub.requests.append((self.command, path))
        failing = hub.mode is not None and (hub.only is None or hub.only in path)
        if failing and hub.mode == "timeout":
            hub._closing.wait(hub.delay)
            if hub._closing.is_set():
                return
        if failing and hub.mode == "500":
            return self._error(500, None, "Internal Error - We're working hard to fix this as soon as possible!", body)
        if failing and hub.mode == "401" and not path.startswith("/cdn/"):
            repo = self._repo_of(path)
            return self._error(401, "GatedRepo", GATED_MESSAGE.format(repo=repo), body)
        truncate = failing and hub.mode == "truncate"
        if path.startswith("/cdn/"):
            return self._cdn(path[len("/cdn/") :], body, truncate)
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/") :], body)
        if "/resolve/" in path:
            return self._resolve(path, body, truncate)
        self._error(404, None, "Not Found", body)

    def _repo_of(self, path: str) -> str:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            parts = parts[2:]
        return "/".join(parts[:2])

    def _api(self, rest: str, body: bool) -> None:
        parts = rest.split("/")
        repo = self.hub.repos.get("/".join(parts[:2]))
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found", body)
        tail = parts[2:]
        if tail and tail[0] in ("revision", "tree") and len(tail) >= 2 and tail[1] not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + tail[1], body)
        if not tail or tail[0] == "revision":
            return self._json(repo.info(), body)
        if tail[0] == "tree":
            prefix = "/".join(tail[2:])
            entries = [e for e in repo.tree() if not prefix or e["path"].startswith(prefix + "/")]
            return self._json(entries, body)
        self._error(404, None, "Not Found", body)

    def _resolve(self, path: str, body: bool, truncate: bool) -> None:
        head, _, tail = path.lstrip("/").partition("/resolve/")
        repo = self.hub.repos.get(head)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found", body)
        revision, _, filename = tail.partition("/")
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, body)
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", body, {"X-Repo-Commit": repo.commit})
        data = repo.files[filename]
        if repo.is_lfs(filename):
            sha = hashlib.sha256(data).hexdigest()
            location = f"http://{self.hub.cdn_host}:{self.hub.port}/cdn/{sha}"
            text = f"Found. Redirecting to {location}".encode()
            return self._send(
                302,
                text if body else None,
                {
                    "Location": location,
                    "X-Repo-Commit": repo.commit,
                    "ETag": f'"{git_blob_id(lfs_pointer(data))}"',
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                    "Content-Type": "text/plain",
                    "Content-Length": str(len(text)),
                },
            )
        self._file(data, body, truncate, {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_id(data)}"'})

    def _cdn(self, sha: str, body: bool, truncate: bool) -> None:
        data = self.hub.blobs.get(sha)
        if data is None:
            return self._error(404, None, "Not Found", body)
        self._file(data, body, truncate, {"ETag": f'"{sha}"'})

    # --- responses -------------------------------------------------------------------------------
    def _file(self, data: bytes, body: bool, truncate: bool, headers: dict) -> None:
        start, status = 0, 200
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
            start = min(int(ranged[6:].split("-")[0]), len(data))
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        part = data[start:]
        headers = {
            **headers,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(part)),
        }
        if not body:
            return self._send(status, None, headers)
        if truncate:
            cut = len(data) // 2  # the same place on every try: a resumed request gets nothing more
            part = data[start : max(start, cut)]
        self._send(status, part, headers)
        if truncate:
            self.close_connection = True

    def _json(self, obj, body: bool) -> None:
        data = json.dumps(obj).encode()
        self._send(200, data if body else None, {"Content-Type": "application/json", "Content-Length": str(len(data))})

    def _error(self, status: int, code: str | None, message: str, body: bool, extra: dict | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "X-Error-Message": message,
            **(extra or {}),
        }
        if code:
            headers["X-Error-Code"] = code
        self._send(status, data if body else None, headers)

    def _send(self, status: int, data: bytes | None, headers: dict) -> None:
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout)


class _NoWaitTime:
    """The time module without sleeping: huggingface_hub's retries still happen, without their waits."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def quick_client(monkeypatch, timeout: float = 5.0) -> None:
    """Make huggingface_hub (in this process, for one test) online, with ``timeout`` s timeouts and no retry waits.

    huggingface_hub reads HF_HUB_OFFLINE and the timeouts from the environment once, at import: the
    test sets both the variables (for anything started later) and the constants it already read.
    """
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.setenv(name, "1")
        monkeypatch.setattr(constants, name, timeout)
    for module in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
        monkeypatch.setattr(f"{module}.time", _NoWaitTime(), raising=False)
