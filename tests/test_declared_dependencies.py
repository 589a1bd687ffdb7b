"""Every third-party module the package imports is declared in pyproject.toml (a dependency or
an extra): a `pip install kinject[...]` on a clean machine gets what the code imports, even
where the import is guarded (a guarded import that is never installed silently does nothing)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import kinject

PACKAGE = Path(kinject.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_canonical(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - {"kinject", "__future__"} - set(sys.stdlib_module_names)


def test_every_installed_third_party_import_is_declared() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = _declared()
    undeclared: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _top_level_imports(path):
            dists = {_canonical(d) for d in providers.get(name, ())}
            # a module no installed distribution provides cannot be mapped to a name here
            if dists and not dists & declared:
                undeclared.setdefault(f"{name} ({', '.join(sorted(dists))})", set()).add(
                    str(path.relative_to(PACKAGE)))
    assert not undeclared, (
        "imported but not declared in pyproject.toml: "
        + "; ".join(f"{m} in {', '.join(sorted(f))}" for m, f in sorted(undeclared.items())))
