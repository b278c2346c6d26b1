"""Installing the Debian packages a test needs (as root), for the fixtures that start real servers."""

from __future__ import annotations

import os
import subprocess
from typing import Sequence


def apt_install(packages: Sequence[str]) -> str | None:
    """Install ``packages`` with apt-get; the reason it could not, or None."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    out = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:  # a stale package index is the usual cause; refresh it once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=900)
        out = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return f"`{' '.join(install)}` failed: {(out.stderr or out.stdout).strip()[-500:]}"
    return None
