"""Oracle 7: every import points down, and no files import each other in a loop.

Read from the source alone (the AST of every module, imports inside functions included), so a
lazy import cannot hide a dependency. Floors, from the ground up: the core library, allocation,
the server and device sides (which never import each other), the Flower wiring, the test and
benchmark harness, the experiments.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"edgesplit": 0, "allocation": 1, "strategies": 2, "clients": 2, "fl_app": 3,
          "harness": 4, "experiments": 5}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    found = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports (a `from pkg import sub` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    ours = set()
    for target in targets:
        while target and target not in known:  # `import a.b.c` imports a.b.c's module
            target = target.rpartition(".")[0]
        if target and target != name:
            ours.add(target)
    return ours


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def test_every_import_points_down(graph):
    upward = [f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
              if FLOORS[top(dst)] > FLOORS[top(src)]
              or (FLOORS[top(dst)] == FLOORS[top(src)] and top(dst) != top(src))]
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_file_imports_itself_through_others(graph):
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The two checks above can fail."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        {"a", "b", "c"}]
    assert not strongly_connected({"a": {"b"}, "b": set()})
    known = {"edgesplit.x": ROOT / "edgesplit" / "x.py", "fl_app.y": ROOT / "fl_app" / "y.py"}
    source = "from fl_app.y import thing\n"
    (ROOT / ".structure-probe.py").write_text(source)
    try:
        assert imported("edgesplit.x", ROOT / ".structure-probe.py", known) == {"fl_app.y"}
    finally:
        (ROOT / ".structure-probe.py").unlink()


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the sets of two or more modules that import each other in a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
