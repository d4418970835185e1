"""The packages' wiring: no module imports another that imports it back, at any depth, and every
module imports on its own in a fresh interpreter (so no import order is needed)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("qsit", "data_builders", "evals", "mixing", "ui")


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports anywhere in it (inside functions too: a lazy import still couples)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_project_modules():
    mods = project_modules()
    known = set(mods)
    # A package's __init__ is imported with any of its modules; an edge to it is not a circle.
    graph = {m: {d for d in imports_of(p, known) if d != m and d not in PACKAGES} for m, p in mods.items()}
    assert cycles(graph) == []
    assert "qsit.cli" not in graph["evals.cli"] and "qsit.cli" not in graph["mixing.cli"]
    assert not any(d.startswith("qsit.cli") for d in graph["ui.app"])


@pytest.mark.parametrize("module", [m for m in project_modules() if m != "ui.app"])
def test_every_module_imports_first(module):
    # ui.app is a Streamlit script (it draws the page when imported); test_ui runs it.
    r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
