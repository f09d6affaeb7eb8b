"""No module of wsistream imports itself back, not even for type checking (issue 19, item 2).

An edge is every module-level import, those under ``if TYPE_CHECKING:`` and
``try:`` included: a circle hidden behind ``TYPE_CHECKING`` still means two
modules that cannot be read, changed or tested one without the other
(``pipeline.pipeline`` ↔ ``pipeline.stream`` was one). Imports inside
functions are not edges: they are how heavy optional libraries are deferred.
``from pkg import submodule`` is an edge to the submodule only, since the
importer's own package is initialised before it anyway.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "wsistream"

#: Circles other work of issue 19 unties; this list only shrinks.
_KNOWN_CYCLES = {
    frozenset({"wsistream.storage.config", "wsistream.storage.urls"}),
    frozenset({"wsistream.features.encoders", "wsistream.features.vit_checkpoints"}),
}


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(stmts: list[ast.stmt], module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    names: set[str] = set()
    for stmt in stmts:
        if isinstance(stmt, ast.Import):
            names.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                parent = module.split(".")[: len(module.split(".")) - stmt.level + int(is_package)]
                base = ".".join([*parent, *([stmt.module] if stmt.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in stmt.names} & known.keys()
            names.update(submodules)
            if len(submodules) < len(stmt.names):
                names.add(base)
        elif isinstance(stmt, (ast.If, ast.Try)):
            blocks = [stmt.body, stmt.orelse, *([h.body for h in stmt.handlers] if isinstance(stmt, ast.Try) else [])]
            if isinstance(stmt, ast.Try):
                blocks.append(stmt.finalbody)
            for block in blocks:
                names |= _imported(block, module, is_package, known)
    return names


def import_cycles(root: Path) -> list[frozenset[str]]:
    """Strongly connected groups (> 1 module) of the module-level import graph under ``root``."""
    known = _modules(root)
    graph = {}
    for name, path in known.items():
        imported = _imported(ast.parse(path.read_text()).body, name, path.name == "__init__.py", known)
        graph[name] = (imported & known.keys()) - {name}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[frozenset[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                cycles.append(frozenset([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_new_import_cycles():
    new = [sorted(c) for c in import_cycles(SRC) if c not in _KNOWN_CYCLES]
    assert not new, f"modules that import each other (module level, TYPE_CHECKING included): {new}"


def test_a_type_checking_circle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text("from pkg.stream import Stream\n")
    (pkg / "stream.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.pipeline import Pipeline\n"
    )
    (pkg / "lazy.py").write_text("def f():\n    from pkg import stream\n")
    assert import_cycles(pkg) == [frozenset({"pkg.pipeline", "pkg.stream"})]
