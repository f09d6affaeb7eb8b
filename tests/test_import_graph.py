"""Import cycles in ``src/wsistream``: none, except the ones listed as debt below (issue 19, item 2).

Every ``import``/``from ... import`` in a module is an edge: at module level, inside a function
(a function-level import only moves the cycle to call time) and under ``if TYPE_CHECKING:`` (a
circle hidden there still means two modules that cannot be read, changed or tested one without
the other; ``pipeline.pipeline`` ↔ ``pipeline.stream`` was one). A package's ``__init__`` is not an
implied edge of its submodules: the packages export lazily (``wsistream._lazy``); and
``from pkg import submodule`` is an edge to the submodule only.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Cycles left to untie (issue 19 item 2), each a sorted tuple of module names; empty it as they go.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known.keys()
            found |= submodules
            if len(submodules) < len(node.names):  # a name defined in ``base`` itself
                found.add(base)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(tuple(sorted(component)))
    return found


def _graph(src: Path = SRC / "wsistream") -> dict[str, set[str]]:
    known = _modules(src)
    return {name: _imports(name, path, known) for name, path in known.items()}


def test_no_new_import_cycles():
    cycles = _cycles(_graph())
    assert cycles - KNOWN_CYCLES == set(), "new import cycles"
    assert KNOWN_CYCLES - cycles == set(), "untied: remove these from KNOWN_CYCLES"


def test_encoder_registry_and_model_zoo_import_one_way():
    graph = _graph()
    zoo = {"wsistream.features.ibot", "wsistream.features.phikon", "wsistream.features.vit_checkpoints"}
    assert graph["wsistream.features.encoders"] & zoo == set()
    assert all("wsistream.features.encoders" in graph[m] for m in zoo)
    assert not any(m.startswith("wsistream.") for m in graph["wsistream.registry"])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_a_circle_behind_type_checking_or_in_a_function_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text("from pkg.stream import Stream\n")
    (pkg / "stream.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.pipeline import Pipeline\n"
    )
    (pkg / "zoo.py").write_text("def load():\n    from pkg import registry\n")
    (pkg / "registry.py").write_text("from pkg.zoo import load\n")
    (pkg / "leaf.py").write_text("from pkg import stream\n")
    assert _cycles(_graph(pkg)) == {("pkg.pipeline", "pkg.stream"), ("pkg.registry", "pkg.zoo")}
