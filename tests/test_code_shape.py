"""The library reads as small parts: no function of `noisekd/` longer than 80 lines."""

import ast
from pathlib import Path

LIMIT = 80


def function_lengths() -> list[tuple[int, str]]:
    out = []
    for path in sorted((Path(__file__).resolve().parent.parent / "noisekd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.parent.name}/{path.name}:{node.name}"))
    return sorted(out, reverse=True)


def test_no_function_in_the_library_is_over_80_lines():
    lengths = function_lengths()
    print("longest functions:", ", ".join(f"{name} {n}" for n, name in lengths[:8]))
    assert [(n, name) for n, name in lengths if n > LIMIT] == []
