"""The house style holds: ruff's lint and format (120 columns) and snakefmt, as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        ["snakefmt", "--check", "workflow/Snakefile", "workflow/rules"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_code_is_linted_and_formatted(command):
    if command[0] == "snakefmt":
        command[0] = shutil.which("snakefmt") or str(Path(sys.executable).parent / "snakefmt")
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
