"""The package tree is the architecture: each layer imports only the layers below it, and no
module reaches itself through imports (lazy, function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import openloop

PACKAGE = Path(openloop.__file__).parent
# Lowest first. A module may import its own layer and any lower one.
LAYERS = ["primitives", "state", "adapters", "loop", "actions", "cli", "entry"]
PRIMITIVES = {"env", "errors", "progress", "resources", "text"}
ENTRY = {"__init__", "__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(("openloop",) + parts)] = path
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "entry"
    if len(parts) == 2 and parts[1] in PRIMITIVES:
        return "primitives"
    if len(parts) == 2 and parts[1] in ENTRY:
        return "entry"
    return parts[1]


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every openloop module the file imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("openloop"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("openloop"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                out.add(candidate if candidate in known else node.module)
    return {m for m in out if m in known}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imports(path, known) - {module} for module, path in known.items()}


def test_every_module_belongs_to_a_known_layer():
    strays = [m for m in _graph() if _layer(m) not in LAYERS]
    assert strays == []


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, deps in _graph().items():
        rank = LAYERS.index(_layer(module))
        for dep in deps:
            if dep == "openloop":  # the package itself (version), imported by the CLI
                continue
            if LAYERS.index(_layer(dep)) > rank:
                upward.append(f"{module} -> {dep}")
    assert sorted(upward) == []


def test_no_import_circles():
    graph = _graph()
    # Package __init__ modules are imported by every submodule; they import nothing back.
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append(trail[trail.index(dep) :] + [dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_every_layer_package_says_what_belongs_there():
    for layer in LAYERS:
        if layer in ("primitives", "entry"):
            continue
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "Must not" in doc, layer
