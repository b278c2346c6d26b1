"""One front door: the Snakemake scripts and the CLI call the same step functions of study/steps.py."""

from __future__ import annotations

import ast
from pathlib import Path

from alertvision.cli import COMMANDS
from alertvision.study import steps

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


def _steps_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "alertvision.study.steps"
        for alias in node.names
    }


def test_every_script_step_has_a_command_and_every_command_step_exists():
    by_scripts = set().union(*(_steps_imported(p) for p in sorted(SCRIPTS.glob("*.py"))))
    by_cli = {step for command in COMMANDS for step in command.steps}
    assert by_cli <= {name for name in dir(steps) if callable(getattr(steps, name))}
    # the resolved config the rule writes is `alertvision config` printing it
    assert by_scripts - by_cli == {"write_resolved_config"}


def test_every_script_goes_through_steps_only():
    """A script unpacks snakemake and calls one step; it imports nothing else of the library but logging
    and the sweep storage's URL unmasking."""
    allowed = {"alertvision.study.steps", "alertvision.logs", "alertvision.sweeps.storage"}
    for path in sorted(SCRIPTS.glob("*.py")):
        modules = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alertvision")
        }
        assert modules <= allowed, f"{path.name} imports {sorted(modules - allowed)}"
        assert _steps_imported(path), f"{path.name} calls no step of study/steps.py"
