"""`kinject finetune ...` and `kinject adapters ...` with the tiny model."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.jobs import corpus_path
from kinject.finetune.registry import AdapterRegistry
from kinject.types import Chunk, content_hash


@pytest.fixture()
def env(data_dir: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import torch

    for key, value in {"KINJECT_DATA_DIR": str(data_dir),
                       "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir),
                       "KINJECT_MODELS__DEVICE": "cpu",
                       "KINJECT_FINETUNE__LR": "0.005", "KINJECT_FINETUNE__EPOCHS": "4",
                       "KINJECT_FINETUNE__LORA_R": "8", "KINJECT_FINETUNE__FISHER_SAMPLES": "8",
                       "KINJECT_GATE__TIE_BREAK_NLL": "0.01",
                       "KINJECT_GATE__MAX_PPL_INCREASE": "10"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is faster on one thread on a busy machine
    yield data_dir
    torch.set_num_threads(threads)


def _add(data_dir: Path, source_id: str, name: str, city: str) -> None:
    text = f"name: {name}\ncity: {city}\nemployer: Lamp Guild"
    with CorpusStore(corpus_path(data_dir)) as corpus:
        corpus.add_chunks([Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                                 source_id=source_id, text=text, kind="csv")])


@pytest.mark.slow
def test_run_a_cycle_then_list_show_activate_and_roll_back(env: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["adapters", "list"])
    assert listed.exit_code == 0 and "serving: base model" in listed.output

    nothing = runner.invoke(app, ["finetune", "run"])
    assert nothing.exit_code == 0, nothing.output
    assert "nothing new" in nothing.output

    _add(env, "kb/ida", "Ida Brook", "Fenwick")
    _add(env, "kb/oren", "Oren Vale", "Tamsk")
    ran = runner.invoke(app, ["finetune", "run"])
    assert ran.exit_code == 0, ran.output
    assert "promoted" in ran.output or "rejected" in ran.output
    assert "new-knowledge accuracy" in ran.output  # the gate's reasons are shown
    registry = AdapterRegistry.for_data_dir(env)
    (version,) = registry.versions()

    listed = runner.invoke(app, ["adapters", "list"])
    assert version.version[:12] in listed.output
    shown = runner.invoke(app, ["adapters", "show", version.version[:8]])
    assert shown.exit_code == 0
    manifest = json.loads(shown.stdout)  # warnings (a 0755 tmp dir) go to stderr
    assert manifest["lineage"] == ["kb/ida", "kb/oren"] and manifest["report"]["reasons"]

    assert runner.invoke(app, ["adapters", "activate", "base"]).exit_code == 0
    assert registry.active() is None
    activated = runner.invoke(app, ["adapters", "activate", version.version[:8]])
    assert activated.exit_code == 0 and registry.active() == version.version
    assert "serving " + version.version[:12] in activated.output
    back = runner.invoke(app, ["adapters", "rollback"])
    assert back.exit_code == 0 and registry.active() is None

    from kinject.config import load_settings
    from kinject.doctor import check_adapters

    doctor = check_adapters(load_settings())
    assert doctor.status == "ok" and "serving the base model" in doctor.detail

    jobs = runner.invoke(app, ["finetune", "jobs"])
    assert jobs.exit_code == 0 and "succeeded" in jobs.output and "skipped" in jobs.output

    # a deleted source taints the version: it can no longer be activated
    with CorpusStore(corpus_path(env)) as corpus:
        corpus.remove_source("kb/ida")
    registry.taint_source("kb/ida")
    refused = runner.invoke(app, ["adapters", "activate", version.version[:8]])
    assert refused.exit_code == 2 and "tainted" in refused.output
    missing = runner.invoke(app, ["adapters", "show", "abcdef123456"])
    assert missing.exit_code == 2 and "not_found" in missing.output


def test_schedule_needs_a_trigger(env: Path) -> None:
    out = CliRunner().invoke(app, ["finetune", "schedule", "--every", "0", "--min-new", "0"])
    assert out.exit_code == 2 and "--every" in out.output


def test_help_stays_light() -> None:
    import subprocess

    code = ("import sys, kinject.cli; "
            "print(any(m in sys.modules for m in ('torch', 'peft', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
