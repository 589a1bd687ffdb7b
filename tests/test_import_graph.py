"""Imports run one way (ARCHITECTURE.md): ``stream/`` owns every Kafka edge, so neither
fine-tuning nor answering imports it; they get callbacks (finetune/announce.py) instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kinject

PACKAGE = Path(kinject.__file__).parent


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["finetune", "rag"])
def test_package_never_imports_stream(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"no modules under kinject/{package}"
    offenders = {f"{p.relative_to(PACKAGE)}: {name}" for p in files for name in _imported(p)
                 if name == "kinject.stream" or name.startswith("kinject.stream.")}
    assert not offenders, f"kinject.{package} imports stream/: {sorted(offenders)}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    # a lazy import is an import all the same: the walk must not stop at the top level
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kinject.stream.topics import ensure_topics\n")
    assert "kinject.stream.topics" in _imported(module)
