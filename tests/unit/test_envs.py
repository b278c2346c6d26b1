"""envs/alertvision.yaml lists the same packages as pyproject.toml (conda is not available to test it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
#: conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {
    "matplotlib-base": "matplotlib",
    "snakemake-minimal": "snakemake",
    "huggingface_hub": "huggingface-hub",
    "psycopg2": "psycopg2-binary",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\s\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pypi = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((REPO / "envs" / "alertvision.yaml").read_text())
    conda = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name = _name(item.split("=")[0] if isinstance(dep, str) else item)
            conda.add(_name(CONDA_TO_PYPI.get(name, name)))
    assert conda - {"python", "pip"} == pypi
