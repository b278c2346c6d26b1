"""The library's structural measures, read from the source with `ast` (nothing is imported or run).

    python benchmarks/code_measures.py [SRC]          # SRC defaults to src/alertvision

Prints the counts (cycles twice: every import, and module-level imports alone), each with what it counts:

- import cycles: strongly connected groups (two modules or more) of the graph of the imports between
  the library's modules, inside functions too (a cycle closed by an import inside a function is still a
  cycle; the module-level ones alone are printed apart); `if TYPE_CHECKING:` imports are not run and not
  counted, and an import names the module it reads, not the packages Python initialises on the way;
- upward imports: imports (module level or inside a function, `TYPE_CHECKING` included) from a module
  to one of a higher layer, by the layer order `LAYERS` of tests/unit/test_front_doors.py (the test
  that pins it; docs/architecture.md draws it), read from that file as a literal;
- function-level imports: import statements inside a function's body;
- functions over 50 lines: `def` line to last line;
- `Mapping[str, Any]` parameters of public functions (a name without a leading underscore, at
  module level or a method of a public class).

`--list` prints what each count counts.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "alertvision"
LAYER_TEST = ROOT / "tests" / "unit" / "test_front_doors.py"

#: Third-party packages worth an import inside a function: heavy to import, or optional where a light
#: entry point runs (jsonschema and yaml: ``benchmarks/table2.py`` runs without them).
DEFERRABLE = (
    "torch", "torchvision", "timm", "onnx", "onnxruntime", "pandas", "pyarrow", "optuna", "matplotlib", "umap",
    "sklearn", "scipy", "astropy", "fastavro", "sqlalchemy", "safetensors", "huggingface_hub", "PIL", "numpy",
    "jsonschema", "yaml",
)  # fmt: skip


def read_layers(path: Path = LAYER_TEST) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``LAYERS`` literal of the layer test: (layer, module prefixes), lowest first."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LAYERS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{path} defines no LAYERS")


def layer_of(module: str, layers) -> str:
    """The layer of ``module``: that of the longest prefix naming it (``alertvision.study.plan`` before
    ``alertvision.study``)."""
    best = None
    for layer, prefixes in layers:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (layer, prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in {LAYER_TEST.name}")
    return best[0]


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(src: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p, src): (p, ast.parse(p.read_text(), str(p))) for p in sorted(src.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement with (at module level, under `if TYPE_CHECKING`)."""

    def walk(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, not in_function, type_checking
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, True, type_checking)
            else:
                yield from walk(child, in_function, type_checking or _is_type_checking(child))

    yield from walk(tree, False, False)


def targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The library modules an import statement reads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {n for n in names if n in known}
    base = node.module or ""
    if node.level:
        anchor = here.split(".") if is_package else here.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_edges(mods: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, str, int, bool, bool]]:
    """(importer, imported, line, module level, type checking only) for every import within the library."""
    known = set(mods)
    edges = []
    for name, (path, tree) in mods.items():
        for node, top, tc in imports(tree):
            for target in targets(node, name, path.name == "__init__.py", known):
                if target != name:
                    edges.append((name, target, node.lineno, top, tc))
    return edges


def cycles(edges: list[tuple[str, str, int, bool, bool]], module_level: bool = False) -> list[list[str]]:
    """Strongly connected groups of two modules or more (Tarjan) of the imports that run (all of them, or
    the module-level ones)."""
    graph: dict[str, set[str]] = {}
    for a, b, _, top, tc in edges:
        if (top or not module_level) and not tc:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def upward(edges: list[tuple[str, str, int, bool, bool]], layers) -> list[tuple[str, str, int]]:
    """Imports from a module to one of a higher layer."""
    rank = {layer: i for i, (layer, _) in enumerate(layers)}
    return [(a, b, line) for a, b, line, _, _ in edges if rank[layer_of(b, layers)] > rank[layer_of(a, layers)]]


def _reads(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, known: set[str]) -> tuple[set, set]:
    """(library modules with the packages above them, third-party top-level packages) an import runs."""
    mods = targets(node, here, is_package, known)
    with_parents = {".".join(m.split(".")[:i]) for m in mods for i in range(1, m.count(".") + 2)} & known
    if isinstance(node, ast.Import):
        outside = {a.name.split(".")[0] for a in node.names}
    else:
        outside = set() if node.level else {(node.module or "").split(".")[0]}
    return with_parents - {here}, outside - {PACKAGE, "__future__"}


def closures(mods: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """The third-party packages importing each module loads (its module-level imports, transitively)."""
    known = set(mods)
    direct = {}
    for name, (path, tree) in mods.items():
        lib, outside = set(), set()
        for node, top, tc in imports(tree):
            if top and not tc:
                a, b = _reads(node, name, path.name == "__init__.py", known)
                lib |= a
                outside |= b
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)} & known
        direct[name] = (lib | parents, outside)
    out: dict[str, set[str]] = {}
    for name in mods:
        seen, todo, pkgs = {name}, [name], set()
        while todo:
            lib, outside = direct[todo.pop()]
            pkgs |= outside
            todo += [m for m in lib - seen]
            seen |= lib
        out[name] = pkgs
    return out


def deferred_imports(mods: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, int, str, list[str]]]:
    """Every import inside a function with the deferrable packages it loads that its module does not load
    at import time: (module, line, statement, those packages; empty: nothing to defer)."""
    known, closure = set(mods), closures(mods)
    out = []
    for name, (path, tree) in mods.items():
        for node, top, _ in imports(tree):
            if top:
                continue
            lib, outside = _reads(node, name, path.name == "__init__.py", known)
            loads = set(outside).union(*(closure[m] for m in lib)) if lib else set(outside)
            added = sorted((loads - closure[name]) & set(DEFERRABLE), key=DEFERRABLE.index)
            out.append((name, node.lineno, ast.unparse(node), added))
    return out


def function_imports(mods: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, int, str]]:
    return [
        (name, node.lineno, ast.unparse(node))
        for name, (_, tree) in mods.items()
        for node, top, _ in imports(tree)
        if not top
    ]


def long_functions(mods: dict[str, tuple[Path, ast.Module]], limit: int = 50) -> list[tuple[str, str, int]]:
    return [
        (name, node.name, node.end_lineno - node.lineno + 1)
        for name, (_, tree) in mods.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def _public_functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            yield node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not item.name.startswith("_"):
                    yield item


def mapping_parameters(mods: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, str, str]]:
    out = []
    for name, (_, tree) in mods.items():
        for fn in _public_functions(tree):
            a = fn.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                text = ast.unparse(arg.annotation) if arg.annotation else ""
                if text.replace(" ", "") in {"Mapping[str,Any]", "'Mapping[str,Any]'"}:
                    out.append((name, fn.name, arg.arg))
    return out


def measure(src: Path) -> dict[str, list]:
    mods = modules_of(src)
    edges = import_edges(mods)
    return {
        "import cycles": cycles(edges),
        "import cycles of module-level imports": cycles(edges, module_level=True),
        "upward imports": upward(edges, read_layers()),
        "function-level imports": function_imports(mods),
        "functions over 50 lines": long_functions(mods),
        "Mapping[str, Any] parameters in public functions": mapping_parameters(mods),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, default=ROOT / "src" / PACKAGE)
    parser.add_argument("--list", action="store_true", help="print what each count counts")
    args = parser.parse_args()
    for what, items in measure(args.src.resolve()).items():
        print(f"{len(items):5d}  {what}")
        if args.list:
            for item in items:
                print("        ", item)


if __name__ == "__main__":
    main()
