"""The package's import graph, built from the source, against the layer order docs/architecture.md states.

Every ``import``/``from ... import`` counts, at module level, inside functions and under ``TYPE_CHECKING``:
a function-level import that climbs back up is the same dependency, only deferred.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cxr_bench"
ARCHITECTURE = REPO / "docs" / "architecture.md"

# Imports that climb back up on purpose: (importer module, imported module) -> the reason, which
# docs/architecture.md repeats. Empty: every edge runs down.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def documented_layers() -> list[list[str]]:
    """The layers of the first fenced block of docs/architecture.md, lowest first; names on one line share a
    level. A line is ``[-> ]name[, name...] (description)``."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = re.search(r"```\n(.*?)```", text, re.S)
    assert block is not None, "docs/architecture.md has no fenced layer diagram"
    levels = []
    for line in block.group(1).splitlines():
        names = line.strip().removeprefix("->").split("(", 1)[0]
        levels.append([n.strip() for n in names.split(",") if n.strip()])
    return levels


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_edges() -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, at_module_level)`` for every import of a ``cxr_bench`` module; the imported
    name is resolved to a module where ``from package import submodule`` names one."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            for target in targets:
                if target.split(".")[0] != "cxr_bench":
                    continue
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                edges.append((importer, target, node.lineno, id(node) in top))
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cxr_bench"


def test_every_part_of_the_package_is_placed_in_the_documented_order():
    placed = [name for level in documented_layers() for name in level]
    assert len(placed) == len(set(placed)), placed
    present = {layer_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"cxr_bench"}
    assert present - set(placed) == set(), "add these to the diagram of docs/architecture.md"
    assert set(placed) - present == set(), "the diagram names parts the package does not have"


def test_no_import_climbs_back_up_a_layer():
    level = {name: i for i, names in enumerate(documented_layers()) for name in names}
    up = []
    for importer, imported, line, _ in import_edges():
        a, b = layer_of(importer), layer_of(imported)
        if a == "cxr_bench":
            up.append(f"{importer}:{line} -> {imported} (the package root imports nothing of the package)")
        elif b != "cxr_bench" and level[b] > level[a] and (importer, imported) not in EXCEPTIONS:
            up.append(f"{importer}:{line} -> {imported} ({a} sits below {b})")
    assert up == []


def test_the_exceptions_are_live_and_documented():
    edges = {(a, b) for a, b, _, _ in import_edges()}
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for (a, b), reason in EXCEPTIONS.items():
        assert (a, b) in edges, f"{a} -> {b} no longer exists: drop the exception here and in the doc"
        assert a in text and b in text, f"docs/architecture.md gives no reason for {a} -> {b} ({reason})"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_two_layers_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, _ in import_edges():
        if layer_of(importer) != layer_of(imported):
            graph[layer_of(importer)].add(layer_of(imported))
    assert _cycle(graph) is None


def test_no_circle_of_module_level_imports():
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, top in import_edges():
        # A package's __init__ is imported on the way to any of its modules; that is no circle.
        if top and importer != imported and not importer.startswith(imported + "."):
            graph[importer].add(imported)
    assert _cycle(graph) is None


@pytest.mark.parametrize("graph, cyclic", [({"a": {"b"}, "b": {"c"}}, False), ({"a": {"b"}, "b": {"a"}}, True)])
def test_the_cycle_finder_finds_cycles(graph, cyclic):
    assert (_cycle(graph) is not None) == cyclic
