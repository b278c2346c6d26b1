"""The library's structural measures, read from the source with `ast` (nothing is imported or run).

    python benchmarks/code_measures.py [SRC]          # SRC defaults to src/alertvision

Prints five counts, each with what it counts:

- import cycles: strongly connected groups (two modules or more) of the graph of module-level
  imports between the library's modules (`if TYPE_CHECKING:` imports are not run and not counted; an
  import names the module it reads, not the packages above it that Python initialises on the way);
- upward imports: imports (module level or inside a function, `TYPE_CHECKING` included) from a module
  to one of a higher layer, by the layer order of `LAYERS` (the one docs/architecture.md draws and
  tests/unit/test_front_doors.py pins);
- function-level imports: import statements inside a function's body;
- functions over 50 lines: `def` line to last line;
- `Mapping[str, Any]` parameters of public functions (a name without a leading underscore, at
  module level or a method of a public class).

`--list` prints what each count counts.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from alertvision.layers import LAYERS, layer_of  # noqa: E402  (the layer order lives in the library)

PACKAGE = "alertvision"


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


def cycles(edges: list[tuple[str, str, int, bool, bool]]) -> list[list[str]]:
    """Strongly connected groups of two modules or more (Tarjan) in the run-time module-level graph."""
    graph: dict[str, set[str]] = {}
    for a, b, _, top, tc in edges:
        if top and not tc:
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def upward(edges: list[tuple[str, str, int, bool, bool]]) -> list[tuple[str, str, int]]:
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    return [(a, b, line) for a, b, line, _, _ in edges if rank[layer_of(b)] > rank[layer_of(a)]]


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
        "import cycles (module level)": cycles(edges),
        "upward imports": upward(edges),
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
