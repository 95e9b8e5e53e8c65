"""The packages' module graph: no import cycles, eager or lazy (an import inside a function counts)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_graph(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` -> the package's modules it imports anywhere in its text."""
    deps: dict[str, set[str]] = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = parts
        else:
            pkg = parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                m = ".".join(base + ([node.module] if node.module else []))
                found |= {m} | {f"{m}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        deps[".".join(parts)] = found
    return {m: {d for d in ds if d in deps and d != m and not d.startswith(m + ".")} for m, ds in deps.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["pc15jax", "mosaic_jax"])
def test_no_import_cycles(package):
    graph = _module_graph(package)
    assert f"{package}._src" in graph or f"{package}._src.config" in graph  # the graph was read
    assert _cycles(graph) == []
