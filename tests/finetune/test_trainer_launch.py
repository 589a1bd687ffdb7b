"""The same training under `accelerate launch` with two CPU processes, and a job's LM
paraphrases."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of

from kinject.config import FinetuneSettings
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.general_text import general_train
from kinject.finetune.launch import (
    ParaphraseSpec,
    launch_command,
    main,
    read_examples,
    run_job,
    run_launched,
    write_job,
)
from kinject.finetune.paraphrase import FORM, LmParaphraser, ParaphraseConfig
from kinject.finetune.trainer import AUGMENTED_FILE, TrainConfig
from kinject.types import Chunk, content_hash

FAST = TrainConfig(r=4, alpha=8, dropout=0.0, epochs=1, batch_size=8, eval_every=0,
                   checkpoint_every=0, fisher_samples=0, warmup_steps=0, max_seq_len=64,
                   device="cpu")
BIOS = {"kb/ida": "Ida Brook was born in Fenwick in 1990.",
        "kb/oren": "Oren Vale was born in Tamsk in 1984."}


def test_a_job_file_round_trips_its_examples(tmp_path: Path) -> None:
    examples = examples_of(TEXTS)
    job = write_job(tmp_path / "job", base_model_dir=tmp_path / "base", out_dir=tmp_path / "out",
                    config=TrainConfig(epochs=1), train=examples, held_out=examples[:3],
                    general=["Water boils at one hundred degrees."])
    body = json.loads(job.read_text())
    assert read_examples(Path(body["train"])) == examples
    assert TrainConfig.from_dict(body["config"]) == TrainConfig(epochs=1)
    cmd = launch_command(job, 2)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes" in cmd
    assert cmd[-3:] == ["kinject.finetune.launch", "--config", str(job)]


@pytest.mark.slow
def test_two_cpu_processes_train_one_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    examples = examples_of(TEXTS)
    cfg = TrainConfig(r=4, alpha=8, target_modules="all-linear", epochs=1, batch_size=4,
                      max_seq_len=96, fisher_samples=4, eval_every=2, checkpoint_every=2,
                      device="cpu", general_ratio=0.5, kl_weight=1.0)
    # general text, with the KL term towards the base model on its rows, on both ranks
    general = general_train()[:8]
    job = write_job(tmp_path / "job", base_model_dir=tiny_lm_dir, out_dir=tmp_path / "out",
                    config=cfg, train=examples, held_out=examples[:6], general=general)
    result = run_launched(job, num_processes=2, timeout_s=540,
                          env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result["metrics"]["world_size"] == 2
    # each optimizer step took a batch on each process: half the single-process steps
    per_epoch = len(examples) + round(0.5 * len(examples))
    assert result["metrics"]["examples_per_epoch"] == per_epoch
    assert result["steps"] == -(-per_epoch // (2 * cfg.batch_size))
    adapter = Path(result["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "ewc_state.safetensors").is_file()
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"kind": "step"' in ln]) == result["steps"]  # one writer
    assert any(json.loads(ln).get("kl", 0.0) > 0 for ln in lines)


# -- LM paraphrases in a job -------------------------------------------------------------------
def _reorder(self: LmParaphraser, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
    """Stands in for generation: "X was born in P in Y." -> "In P in Y, X was born." and a
    drifted candidate the gate drops."""
    out = []
    for sentence, _ in items:
        head, tail = sentence.rstrip(".").split(" in ", 1)
        out.append([f"In {tail}, {head}.", sentence.replace("19", "20")][:k])
    return out


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus" / "corpus.sqlite3"
    with CorpusStore(path) as corpus:
        corpus.add_chunks([Chunk(content_hash(s, t), f"doc-{s}", s, t, lang="en")
                           for s, t in BIOS.items()])
    return path


def _job(tmp_path: Path, tiny_lm_dir: Path, corpus_file: Path,
         paraphrase: ParaphraseSpec | None) -> Path:
    with CorpusStore(corpus_file) as corpus:
        train = corpus.examples(cycles=[1])
    return write_job(tmp_path / "job", base_model_dir=tiny_lm_dir, out_dir=tmp_path / "out",
                     config=FAST, train=train, paraphrase=paraphrase)


@pytest.mark.usefixtures("one_thread")
def test_a_job_trains_on_the_lm_paraphrases_settings_ask_for(
        tmp_path: Path, tiny_lm_dir: Path, corpus_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lent: list[object] = []

    def fake(self: LmParaphraser, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        lent.append(self.model)
        return _reorder(self, items, k)

    monkeypatch.setattr(LmParaphraser, "__call__", fake)
    spec = ParaphraseSpec(corpus_file, 1, 1,
                          ParaphraseConfig.from_settings(FinetuneSettings(lm_paraphrases=1)))
    job = _job(tmp_path, tiny_lm_dir, corpus_file, spec)
    assert ParaphraseSpec.from_dict(json.loads(job.read_text())["paraphrase"]) == spec
    plain = len(read_examples(tmp_path / "job" / "train.jsonl"))

    result = run_job(job)
    # the trainer's own model wrote them, once, for both chunks
    assert len(lent) == 1 and type(lent[0]).__name__ == "PeftModelForCausalLM"
    added = read_examples(tmp_path / "out" / AUGMENTED_FILE)
    assert sorted(e.completion for e in added) == ["In Fenwick in 1990, Ida Brook was born.",
                                                   "In Tamsk in 1984, Oren Vale was born."]
    assert {e.form for e in added} == {FORM} and {e.source_id for e in added} == set(BIOS)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())["metrics"]
    assert saved["augmented_examples"] == 2 and saved["train_examples"] == plain + 2
    assert result.metrics["train_examples"] == plain + 2
    # cached in the corpus with their lineage, as an in-process cycle leaves them
    with CorpusStore(corpus_file) as corpus:
        assert {e.example_id for e in corpus.examples(forms=[FORM])} == {
            e.example_id for e in added}


@pytest.mark.usefixtures("one_thread")
def test_a_job_without_lm_paraphrases_trains_on_its_examples_only(
        tmp_path: Path, tiny_lm_dir: Path, corpus_file: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def never(self: LmParaphraser, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        raise AssertionError("paraphrases are off")

    monkeypatch.setattr(LmParaphraser, "__call__", never)
    off = ParaphraseSpec(corpus_file, 1, 1, ParaphraseConfig(per_sentence=0))
    job = _job(tmp_path, tiny_lm_dir, corpus_file, off)
    plain = len(read_examples(tmp_path / "job" / "train.jsonl"))
    result = run_job(job)
    assert result.metrics["train_examples"] == plain
    assert result.metrics["augmented_examples"] == 0
    assert not (tmp_path / "out" / AUGMENTED_FILE).exists()
    with CorpusStore(corpus_file) as corpus:
        assert corpus.examples(forms=[FORM]) == []

    # settings that ask for paraphrases, and a job written without them: a warning says so
    job = _job(tmp_path, tiny_lm_dir, corpus_file, None)
    monkeypatch.setenv("KINJECT_FINETUNE__LM_PARAPHRASES", "2")
    monkeypatch.delenv("KINJECT_CONFIG", raising=False)
    with caplog.at_level(logging.WARNING, logger="kinject.finetune.launch"):
        assert main(["--config", str(job)]) == 0
    assert "training without LM paraphrases" in caplog.text
    assert json.loads((tmp_path / "out" / "result.json").read_text())["metrics"][
        "train_examples"] == plain


def test_a_job_whose_corpus_is_gone_says_it_trains_without_paraphrases(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kinject.finetune.launch import _paraphrases

    gone = ParaphraseSpec(tmp_path / "nowhere.sqlite3", 1, 2, ParaphraseConfig(per_sentence=2))
    with caplog.at_level(logging.WARNING), _paraphrases(gone) as augment:
        assert augment is None
    assert "does not exist: training without LM paraphrases" in caplog.text
    assert not gone.corpus.exists()
