"""Rooms a newcomer can read: no module in src/ over 400 lines, no function or method over 80.

The exceptions are listed by name, each a module or function being split now; the lead shrinks
the lists as the splits land. An exception that is back within bounds fails
``test_no_stale_exceptions``, so the lists never hide a new offender behind an old name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import kinject

PACKAGE = Path(kinject.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Modules over MAX_MODULE_LINES, by path under src/kinject/, each being split (session 10).
MODULE_EXCEPTIONS: set[str] = set()

# Functions over MAX_FUNCTION_LINES, as "module path:qualified name".
FUNCTION_EXCEPTIONS: set[str] = set()


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _module_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) of every function and method,
    nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield prefix + node.name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _function_lengths() -> dict[str, int]:
    out: dict[str, int] = {}
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, lines in _functions(tree):
            out[f"{_name(path)}:{name}"] = lines
    return out


def test_no_module_over_the_limit() -> None:
    over = {_name(p): n for p in _modules() if (n := _module_lines(p)) > MAX_MODULE_LINES}
    new = {name: n for name, n in over.items() if name not in MODULE_EXCEPTIONS}
    assert not new, (f"modules over {MAX_MODULE_LINES} lines: {new}; split them by what "
                     "they hold")


def test_no_function_over_the_limit() -> None:
    over = {name: n for name, n in _function_lengths().items() if n > MAX_FUNCTION_LINES}
    new = {name: n for name, n in over.items() if name not in FUNCTION_EXCEPTIONS}
    assert not new, (f"functions over {MAX_FUNCTION_LINES} lines: {new}; give each step a "
                     "name of its own")


def test_no_stale_exceptions() -> None:
    lengths = {_name(p): _module_lines(p) for p in _modules()}
    modules = sorted(m for m in MODULE_EXCEPTIONS if lengths.get(m, 0) <= MAX_MODULE_LINES)
    functions = _function_lengths()
    funcs = sorted(f for f in FUNCTION_EXCEPTIONS if functions.get(f, 0) <= MAX_FUNCTION_LINES)
    assert not modules and not funcs, (
        f"within bounds now (or gone), drop them from the exceptions: {modules + funcs}")


def test_the_function_walk_sees_methods_and_nested_functions() -> None:
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n"
                     "        return 1\n\nasync def f():\n    pass\n")
    assert dict(_functions(tree)) == {"A.m": 4, "A.m.inner": 2, "f": 2}
