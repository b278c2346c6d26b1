"""One front door: the Snakemake scripts and the CLI call the same step functions of study/steps.py. Layers
that hold: the library imports downwards only, without a cycle, and Snakemake plans without heavy libraries."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alertvision.cli import COMMANDS
from alertvision.study import steps

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflow" / "scripts"

#: The library's layers, lowest first (docs/architecture.md draws them): a module imports from its own layer
#: and those below, never from one above. A module's layer is that of the longest prefix naming it.
LAYERS = (
    # what everything may use: atomic writes, safe loading, logs, SLURM signals, the config's schema and error
    ("foundation", ("alertvision", "alertvision.atomic", "alertvision.safeload", "alertvision.logs",
                    "alertvision.slurm", "alertvision.schema", "alertvision.settings")),
    # datasets: the contract, sources and their ingest, synthetic data, surveys
    ("data", ("alertvision.data", "alertvision.synthetic", "alertvision.surveys")),
    # the study's plan: the grid and every path, the config's load and checks (which ask the data sources), the jobs
    ("plan", ("alertvision.study.plan", "alertvision.config", "alertvision.study.embedplan", "alertvision.study.jobs")),
    ("models", ("alertvision.models",)),
    ("training", ("alertvision.training",)),
    ("evaluation", ("alertvision.evaluation", "alertvision.sweeps")),
    ("reports", ("alertvision.reports",)),
    ("deploy", ("alertvision.deploy",)),
    # the front door: one function per pipeline step, and the command line over it
    ("steps", ("alertvision.study",)),
    ("cli", ("alertvision.cli", "alertvision.__main__")),
)  # fmt: skip


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
    """A script unpacks snakemake and calls one step; it imports nothing else of the library but logging,
    the sweep storage's URL unmasking and the stop-signal recorder (a training script's first line, so that a
    cluster's time-limit warning during start-up is recorded, not fatal)."""
    allowed = {
        "alertvision.study.steps",
        "alertvision.logs",
        "alertvision.sweeps.storage",
        "alertvision.training.signals",
    }
    for path in sorted(SCRIPTS.glob("*.py")):
        modules = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alertvision")
        }
        assert modules <= allowed, f"{path.name} imports {sorted(modules - allowed)}"
        assert _steps_imported(path), f"{path.name} calls no step of study/steps.py"


# --------------------------------------------------------------------------- layers that hold


def _measures():
    """benchmarks/code_measures.py: the import graph read with ast (the test and the closing measures share it)."""
    spec = importlib.util.spec_from_file_location("code_measures", REPO / "benchmarks" / "code_measures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def library():
    measures = _measures()
    mods = measures.modules_of(REPO / "src" / "alertvision")
    return measures, mods, measures.import_edges(mods)


def test_every_module_has_a_layer_and_the_order_is_the_one_read_by_the_measures(library):
    measures, mods, _ = library
    assert measures.read_layers() == LAYERS
    for name in mods:
        measures.layer_of(name, LAYERS)  # KeyError naming a module left out of LAYERS


def test_layers_import_downwards_only(library):
    """Module level, inside functions and for type checking alike: no module imports from a higher layer."""
    measures, _, edges = library
    upward = [
        f"{a} ({measures.layer_of(a, LAYERS)}) imports {b} ({measures.layer_of(b, LAYERS)}) on line {line}"
        for a, b, line in measures.upward(edges, LAYERS)
    ]
    assert upward == []


def test_no_import_cycle(library):
    """Counting the imports inside functions: a cycle they close is a cycle all the same."""
    measures, _, edges = library
    assert measures.cycles(edges) == []


def test_an_import_inside_a_function_defers_a_heavy_one_and_says_so(library):
    """An import inside a function loads a package of DEFERRABLE that its module does not load at import time,
    and a ``# deferred:`` comment on it (or above its group of imports) says which."""
    measures, mods, _ = library
    wrong = []
    for name, lineno, statement, added in measures.deferred_imports(mods):
        path, tree = mods[name]
        if not added:
            wrong.append(f"{name}:{lineno} {statement}: defers nothing heavy; import it at module level")
        elif "# deferred:" not in _group_text(path, tree, lineno):
            wrong.append(f"{name}:{lineno} {statement}: defers {added[0]}; say so (# deferred: ...)")
    assert wrong == []


def _group_text(path: Path, tree: ast.Module, lineno: int) -> str:
    """The source of the import on ``lineno``, of the imports right above it and of the line above those."""
    lines = path.read_text().splitlines()
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    by_end = {n.end_lineno: n for n in imports}
    stmt = first = next(n for n in imports if n.lineno == lineno)
    while first.lineno - 1 in by_end:
        first = by_end[first.lineno - 1]
    return "\n".join(lines[first.lineno - 2 : stmt.end_lineno])


def test_the_layers_stop_deferrals_that_break_them(tmp_path):
    """The checks above fail on a library that breaks them: an upward import, a cycle, a pointless deferral."""
    measures = _measures()
    src = tmp_path / "alertvision"
    (src / "data").mkdir(parents=True)
    (src / "models").mkdir()
    for folder in (src, src / "data", src / "models"):
        (folder / "__init__.py").write_text("")
    (src / "data" / "splits.py").write_text("from alertvision.models import cnn\n")
    (src / "models" / "cnn.py").write_text("import torch\n\n\ndef f():\n    from alertvision.data import splits\n")
    mods = measures.modules_of(src)
    edges = measures.import_edges(mods)
    assert measures.upward(edges, LAYERS) == [("alertvision.data.splits", "alertvision.models.cnn", 1)]
    assert measures.cycles(edges) == [["alertvision.data.splits", "alertvision.models.cnn"]]
    assert measures.cycles(edges, module_level=True) == []
    assert [added for *_, added in measures.deferred_imports(mods)] == [[]]


# --------------------------------------------------------------------------- planning stays light

#: What Snakemake must not import to plan: every start pays it, the one inside each cluster job too.
HEAVY = ("torch", "timm", "pandas", "onnx", "onnxruntime")


def _workflow_imports() -> list[str]:
    """Every import statement of the Snakefile and the rules (inside their input functions too)."""
    statements = []
    for path in [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        # an import over several lines ends at its closing parenthesis
        for match in re.finditer(r"^[ \t]*((?:from\s+\S+\s+)?import\s+(?:\([^)]*\)|[^\n]*))", text, re.M):
            statements.append(" ".join(match.group(1).split()))
    return statements


def test_snakemake_plans_without_heavy_libraries():
    statements = _workflow_imports()
    assert any("alertvision.reports.workload" in s for s in statements)  # what benchmark.smk plans with
    assert any("alertvision.study.embedplan" in s for s in statements)
    code = "\n".join([*statements, "import sys", f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"planning imports {out.stdout.strip()}"
