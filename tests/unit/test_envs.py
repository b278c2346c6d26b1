"""workflow/envs/alertvision.yaml lists the same packages as pyproject.toml (conda is not available to test it)."""

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
    env = yaml.safe_load((REPO / "workflow" / "envs" / "alertvision.yaml").read_text())
    conda = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name = _name(item.split("=")[0] if isinstance(dep, str) else item)
            conda.add(_name(CONDA_TO_PYPI.get(name, name)))
    assert conda - {"python", "pip"} == pypi


def test_every_rule_names_the_environment_under_workflow_envs():
    """The workflow catalog's layout: a rule's `conda:` path is relative to its .smk file and leads to
    workflow/envs/alertvision.yaml (a path that leads nowhere only fails where conda runs)."""
    rules = REPO / "workflow" / "rules"
    env = re.search(r'^ENV = "([^"]+)"$', (rules / "common.smk").read_text(), re.M).group(1)
    assert (rules / env).resolve() == REPO / "workflow" / "envs" / "alertvision.yaml"
    directives = [
        (smk.name, line.strip())
        for smk in rules.glob("*.smk")
        for prev, line in zip(smk.read_text().splitlines(), smk.read_text().splitlines()[1:])
        if prev.strip() == "conda:"
    ]
    assert len(directives) >= 20 and {value for _, value in directives} == {"ENV"}, directives
    assert not (REPO / "envs").exists(), "environments live under workflow/envs/"


def test_workflow_catalog_settings():
    """.snakemake-workflow-catalog.yml holds the keys the catalog reads, and what they point at exists."""
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert set(usage["software-stack-deployment"]) == {"conda", "apptainer", "apptainer+conda"}
    # conda deployment needs the rules' environment; the catalog shows config/README.md as the reference
    assert usage["software-stack-deployment"]["conda"] is True
    assert (REPO / "workflow" / "envs" / "alertvision.yaml").is_file() and (REPO / "config" / "README.md").is_file()
    assert usage["report"] is True and (REPO / "workflow" / "report").is_dir()
