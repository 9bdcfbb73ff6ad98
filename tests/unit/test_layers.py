"""The top-level folders are layers: a module imports only from its own layer or those below it,
and no two modules import each other, however indirectly (lazy imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. The serving package (models) sits under the worker that loads it; training replays
# the worker's own state code, and evaluation compares trained models, so both sit above it.
LAYERS = [
    {"settings", "kafka_config", "machine"},
    {"connectors"},
    {"models"},
    {"graph"},
    {"streams"},
    {"stack"},
    {"training"},
    {"evaluation"},
    {"cli", "demo"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level folder is in no layer; add it to LAYERS")


def package_modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if (
            rel.parts[0] in {"tests", "benchmarks", "build"}
            or rel.name == "__init__.py"
            or rel.parts[0].startswith(".")
        ):
            continue
        out["fraudgraph." + ".".join(rel.with_suffix("").parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fraudgraph"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in known else node.module for n in names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("fraudgraph")]
        found.update(n for n in names if n in known)
    return found


MODULES = package_modules()
GRAPH = {name: imports(path, MODULES) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_back_up_the_layers(module):
    upward = sorted(t for t in GRAPH[module] if layer_of(t) > layer_of(module))
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_cycle():
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_layer_test_sees_the_package():
    assert "fraudgraph.streams.pipeline" in MODULES and "fraudgraph.models.serving" in MODULES
    assert "fraudgraph.models.batch" in GRAPH["fraudgraph.streams.scoring"]
