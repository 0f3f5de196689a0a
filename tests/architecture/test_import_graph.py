"""The package's import graph has no cycles: data flows one way (config → teacher → method chain →
export → evaluate → row → store → reports), and a module never needs one that needs it back.

Every ``import`` counts, including the ones inside functions: a lazy import hides a cycle from
Python but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "compbench"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """compbench modules imported anywhere in ``path`` (a package import counts as its __init__;
    ``from pkg import mod`` counts as the submodule when it is one)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in sorted(edges):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges.get(child, ())))))
    return None


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_the_package():
    edges = graph()
    assert "compbench.methods.quantization.qat" in edges
    assert "compbench.methods.quantization.quantizers" in edges["compbench.methods.quantization.qat"]


def test_no_import_cycle_in_src():
    cycle = find_cycle(graph())
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_import_cycle_between_subpackages():
    """Layers, not just modules: ``records`` may read ``metrics``' registry, so ``metrics`` never
    imports ``records``; ``models`` never imports ``methods``; and so on for every pair."""
    top = {}
    for source, targets in graph().items():
        for target in targets:
            a, b = (".".join(m.split(".")[:2]) for m in (source, target))
            if a != b and b != PACKAGE:
                top.setdefault(a, set()).add(b)
    cycle = find_cycle(top)
    if cycle:
        pytest.fail("import cycle between subpackages: " + " -> ".join(cycle))
