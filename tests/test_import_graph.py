"""Imports run one way (ARCHITECTURE.md): ``stream/`` owns every Kafka edge, so neither
fine-tuning nor answering imports it; they get callbacks (finetune/announce.py) instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kinject

PACKAGE = Path(kinject.__file__).parent


def _imported(path: Path, *, with_names: bool = True) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function (and, with
    ``with_names``, every ``module.name`` a ``from module import name`` names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if with_names:
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


# What the edges may import: the facade and the base types everyone shares. kinject (the
# package root: __version__), logs, datadir and threads are the process set-up every edge
# does.
EDGE_BASE = ("kinject.app", "kinject.types", "kinject.errors", "kinject.config",
             "kinject.protocols", "kinject.logs", "kinject.datadir", "kinject.threads")

# Where an edge imports past the facade, by module, with why: what is left are the other
# edges (eval/, serve.py, demo.py, doctor.py, api's key store), which the facade below them
# must not import (test_the_facade_never_imports_the_edges). An entry nothing imports any
# more fails test_no_stale_edge_exceptions, so the lists stay exact.
EDGE_EXCEPTIONS: dict[str, dict[str, str]] = {
    "api": {
        # eval/ is an edge beside api/ and cli/ (ARCHITECTURE.md), so the facade cannot hold it
        "kinject.eval.dataset": "the evaluate route reads a dataset (routes/evaluate)",
        "kinject.eval.runner": "the evaluate route runs it (routes/evaluate)",
    },
    "cli": {
        # edges the CLI only dispatches to: their own layer, not the core behind the facade
        "kinject.api.auth": "kinject keys manages the API's key store (api/ owns the keys)",
        "kinject.demo": "kinject demo (demo.py is an edge: the whole road once)",
        "kinject.doctor": "kinject doctor (doctor.py is an edge: install checks)",
        "kinject.serve": "kinject serve (serve.py is the server process, an edge)",
        "kinject.eval.dataset": "kinject eval (eval/ is an edge; the facade cannot import it)",
        "kinject.eval.report": "kinject eval (eval/ is an edge; the facade cannot import it)",
        "kinject.eval.runner": "kinject eval (eval/ is an edge; the facade cannot import it)",
    },
}


def _modules_imported(path: Path) -> set[str]:
    """The modules ``path`` imports (``from m import name`` counts as ``m``)."""
    return _imported(path, with_names=False)


def _within(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _edge_imports(package: str) -> dict[str, set[str]]:
    """kinject modules outside ``package`` that it imports -> the files importing each."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in _modules_imported(path):
            if (name == "kinject" or name.startswith("kinject.")) and not _within(
                    name, (f"kinject.{package}",)):
                found.setdefault(name, set()).add(str(path.relative_to(PACKAGE)))
    return found


@pytest.mark.parametrize("package", ["api", "cli"])
def test_edges_go_through_the_facade(package: str) -> None:
    allowed = [*EDGE_BASE, *EDGE_EXCEPTIONS[package]]
    offenders = {f"{name} ({', '.join(sorted(files))})"
                 for name, files in _edge_imports(package).items()
                 if name != "kinject" and not _within(name, allowed)}
    assert not offenders, (
        f"kinject.{package} reaches past the facade (kinject.app): {sorted(offenders)}; "
        "add what it needs to the facade, or list it in EDGE_EXCEPTIONS with why")


@pytest.mark.parametrize("package", ["api", "cli"])
def test_no_stale_edge_exceptions(package: str) -> None:
    imported = _edge_imports(package)
    stale = [name for name in EDGE_EXCEPTIONS[package]
             if not any(_within(i, (name,)) for i in imported)]
    assert not stale, f"kinject.{package} no longer imports {stale}: drop them from EDGE_EXCEPTIONS"


def test_the_edge_check_sees_a_reach_past_the_facade(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kinject.index.text_index import TextIndex\n")
    name = next(iter(_modules_imported(module)))
    assert name == "kinject.index.text_index"
    assert not _within(name, [*EDGE_BASE, *EDGE_EXCEPTIONS["api"]])


@pytest.mark.parametrize("package", ["ingest", "index", "finetune", "rag", "stream"])
def test_the_core_never_imports_the_facade_or_the_edges(package: str) -> None:
    upward = ("kinject.app", "kinject.api", "kinject.cli", "kinject.service", "kinject.serve")
    offenders = {f"{name} ({', '.join(sorted(files))})"
                 for name, files in _edge_imports(package).items() if _within(name, upward)}
    assert not offenders, f"kinject.{package} imports upward: {sorted(offenders)}"


EDGES = ("kinject.api", "kinject.cli", "kinject.serve", "kinject.eval", "kinject.demo",
         "kinject.doctor", "kinject.integrations", "kinject.service")


def test_the_facade_never_imports_the_edges() -> None:
    # the edges reach the core through app/; app/ importing one of them would run upward
    offenders = {f"{name} ({', '.join(sorted(files))})"
                 for name, files in _edge_imports("app").items() if _within(name, EDGES)}
    assert not offenders, f"kinject.app imports an edge: {sorted(offenders)}"
