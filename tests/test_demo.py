"""`kinject demo` end to end, as a new user runs it: real broker, real models, real OCR."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kinject.demo_data import DEMO_QUESTIONS

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_demo_answers_every_question_with_its_source(tmp_path: Path, smollm2_cache: Path,
                                                     reader_cache: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # The demo finds both models in the shared cache (KINJECT_MODELS__CACHE_DIR, inherited).
    assert smollm2_cache == reader_cache
    cached = sorted(p.stat().st_mtime_ns for p in smollm2_cache.rglob("*") if p.is_file())
    env = {**os.environ, "KINJECT_DATA_DIR": str(data), "COLUMNS": "220"}
    env.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)
    result = subprocess.run([sys.executable, "-m", "kinject", "demo"], capture_output=True,
                            text=True, env=env, timeout=600)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert f"answers right and cited: {len(DEMO_QUESTIONS)}/{len(DEMO_QUESTIONS)}" in out
    flat = re.sub(r"\s+", " ", out)
    for q in DEMO_QUESTIONS:
        assert any(e in flat for e in q.expected), q.expected
        assert q.source_id.split("/")[-1][:12] in flat, q.source_id
    m = re.search(r"publish -> answerable: median ([\d.]+)s per record, all ([\d.]+)s", out)
    assert m, out
    # the model conversions were reused from the cache, not redone
    assert "converting" not in result.stderr and "preparing the reader" not in result.stderr
    assert sorted(p.stat().st_mtime_ns for p in smollm2_cache.rglob("*") if p.is_file()) == cached
