"""A throwaway PostgreSQL server for the tests (Debian's postgresql).

The session-scoped fixture ``postgres_url`` installs postgresql with apt-get when it is missing (as
root), runs initdb in a fresh folder and starts ``postgres`` on a free local port (as the ``postgres``
user when the tests run as root: the server refuses to run as root), creates a database and yields
its SQLAlchemy URL. Teardown stops the server and removes the folder. It skips, naming the reason,
where it cannot install the server or psycopg2; a server that is installed but does not start is a
failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apt import apt_install

PACKAGES = ["postgresql"]
DB_USER = "alertvision"
DB_PASSWORD = "sweep-secret"  # trust authentication ignores it; it is there to check that reports mask it
DB_NAME = "sweeps"


def _bindir() -> Path | None:
    """The newest installed server's bin folder (Debian keeps it off PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def ensure_postgres() -> Path:
    """The server's bin folder; skip the test where PostgreSQL or psycopg2 is not (and cannot be) here."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = _bindir()
    if bindir is not None:
        return bindir
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("PostgreSQL (initdb, postgres) is not installed, and installing it needs root and apt-get")
    reason = apt_install(PACKAGES)
    if reason:
        pytest.skip(f"cannot install PostgreSQL: {reason}")
    bindir = _bindir()
    if bindir is None:
        pytest.skip(f"initdb still missing after installing {' '.join(PACKAGES)}")
    return bindir


def _server_user() -> str | None:
    """The user to run the server as: ``postgres`` under root (which the server refuses), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the server as")
    return "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], user: str | None, timeout: float = 120) -> None:
    out = subprocess.run(args, user=user, capture_output=True, text=True, timeout=timeout, cwd="/")
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {(out.stderr or out.stdout).strip()[-1000:]}")


def _ready(bindir: Path, port: int) -> bool:
    out = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
    return out.returncode == 0


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg2://alertvision:...@127.0.0.1:PORT/sweeps`` of a server running for the session."""
    bindir = ensure_postgres()
    user = _server_user()
    # not under pytest's tmp_path: its parents are private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="alertvision-pg-"))
    data, sockets, logfile = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if user:
        for path in (root, sockets):
            shutil.chown(path, user, user)
    server: subprocess.Popen | None = None
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync"], user)
        port = _free_port()
        with open(logfile, "ab") as fh:
            if user:
                shutil.chown(logfile, user, user)
            server = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(sockets),
                    "-h",
                    "127.0.0.1",
                    "-F",
                    "-c",
                    "max_connections=100",
                ],
                user=user,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        deadline = time.time() + 60
        while not _ready(bindir, port):
            if server.poll() is not None or time.time() > deadline:
                log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                pytest.fail(f"PostgreSQL did not start on port {port}:\n{log}")
            time.sleep(0.2)
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME], user)
        yield f"postgresql+psycopg2://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, stop
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)
