"""Imports point one way. Every module of the package belongs to a layer, and imports only from its own layer
or the layers below it; no module imports itself back round about. Every import counts: at the top, inside
functions and under TYPE_CHECKING. docs/architecture.md draws the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

import fedhello

ROOT = Path(fedhello.__file__).parent
# lowest first; a name is a top-level module or package of fedhello
LAYERS: list[set[str]] = [
    {
        "__init__",
        "errors",
        "registry",
        "components",
        "accounting",
        "config",
        "plan",
        "patterns",
        "seeding",
        "runtime",
        "paths",
        "events",
        "rundir",
        "models",
    },
    {
        "data",
        "tasks",
        "training",
        "allocation",
        "aggregation",
        "privacy",
        "secure",
        "resources",
        "figures",
        "loggers",
        "experiment",
    },
    {"methods"},  # one folder per method, built from the mechanisms below; nothing below imports a method
    {"server"},
    {"engines"},
    {"cli", "compare", "reporting", "testing"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The fedhello modules `name` imports (a `from package import submodule` counts as the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fedhello")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedhello"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


def layer(name: str) -> int:
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"fedhello.{top} is in no layer: add it to LAYERS here and to docs/architecture.md")


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_imports_point_down_or_sideways():
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name in sorted(MODULES)
        for target in sorted(imports(name))
        if layer(target) > layer(name)
    ]
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {name: imports(name) for name in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target] if target in path else [name, target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def package(name: str) -> str:
    """`fedhello.allocation` for `fedhello.allocation.base`; a top-level module is its own package."""
    return ".".join(name.split(".")[:2])


def test_no_cycles_between_mechanism_packages():
    """Sideways imports inside a layer must not go both ways between two packages (allocation <-> resources was
    one: budget-true allocators use the cost model, and the profiler used the allocation patterns)."""
    edges = {
        (package(name), package(target))
        for name in MODULES
        for target in imports(name)
        if package(name) != package(target)
    }
    both_ways = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not both_ways, "packages importing each other:\n" + "\n".join(both_ways)
