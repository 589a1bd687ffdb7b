"""Every benchmark in bench/ starts: ``--help`` exits 0 (its imports, from kinject and from its
sibling bench modules, resolve). A bench whose helper moved away fails here, not on the day
someone wants its numbers (general_kl.py imported a function inject.py no longer had)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py")
                 if not p.name.startswith("_") and p.name != "inject_questions.py")


def test_the_benches_are_all_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"inject.py", "rag_quality.py", "search.py", "general_kl.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bench_starts(script: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(BENCH.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                          text=True, timeout=300, cwd=BENCH.parent, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
