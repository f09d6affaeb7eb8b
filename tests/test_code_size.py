"""Size limits of ``src/wsistream`` (issue 19, item 5; ../shared/STYLE.md): functions up to 60 lines, files up to 400.

A function's length is its body without the docstring, in source lines (the signature of a Typer
command, one line per option, is not counted). A function over the limit says why in its docstring,
on a line starting with ``Long because``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "wsistream"
MAX_FUNCTION_LINES = 60


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if not body:
        return 0
    end = body[-1].end_lineno
    assert end is not None
    return end - body[0].lineno + 1


def _justified(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    doc = ast.get_docstring(node) or ""
    return any(line.strip().startswith("Long because") for line in doc.splitlines())


def test_no_function_over_60_lines_without_a_reason():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _body_lines(node)
                if n > MAX_FUNCTION_LINES and not _justified(node):
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these into named steps, or say 'Long because ...' in the docstring:\n" + "\n".join(long)


def test_the_length_counts_the_body_without_the_docstring():
    src = 'def f(\n    a,\n    b,\n):\n    """Doc.\n\n    More.\n    """\n    x = 1\n    return x\n'
    node = ast.parse(src).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert _body_lines(node) == 2 and not _justified(node)
    node = ast.parse('def g():\n    """Doc.\n\n    Long because it is a table.\n    """\n').body[0]
    assert isinstance(node, ast.FunctionDef)
    assert _body_lines(node) == 0 and _justified(node)


MAX_FILE_LINES = 400


def test_no_source_file_over_400_lines():
    lines = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))}
    long = {name: n for name, n in lines.items() if n > MAX_FILE_LINES}
    assert not long, f"split these by responsibility into two modules: {long}"
