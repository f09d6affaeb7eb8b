"""Module-level import cycles in ``src/wsistream``: none, except the ones listed as debt below.

Every ``import``/``from ... import`` in a module counts, at module level or inside a function
(both run: a function-level import only moves the cycle to call time); imports under
``if TYPE_CHECKING:`` do not (they never run). A package's ``__init__`` is not an implied
edge of its submodules: the packages export lazily (``wsistream._lazy``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Cycles left to untie (issue 19 item 2), each a sorted tuple of module names; empty it as they go.
KNOWN_CYCLES: set[tuple[str, ...]] = {
    ("wsistream.storage.config", "wsistream.storage.source", "wsistream.storage.urls"),
    ("wsistream.torch", "wsistream.torch.device_views"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "wsistream").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
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


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _runtime_imports(name, path, known) for name, path in known.items()}


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
