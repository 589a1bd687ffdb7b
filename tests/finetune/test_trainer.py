"""LoraTrainer on a tiny Llama: loss falls, answers-only loss, resume, early stopping, mixing."""

import json
from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of, make_sharp_lm

from kinject.finetune.batches import IGNORE, Encoded, encode
from kinject.finetune.trainer import LoraTrainer, TrainConfig, TrainingFailed
from kinject.types import TrainingExample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sharp_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_lm(tiny_lm_dir, tmp_path_factory.mktemp("sharp-lm"))


@pytest.fixture(scope="module")
def examples() -> list[TrainingExample]:
    return examples_of(TEXTS)


def _fast(**kw: object) -> TrainConfig:
    base = dict(r=8, alpha=16, dropout=0.0, target_modules="all-linear", lr=1e-2, epochs=2,
                batch_size=8, max_seq_len=128, fisher_samples=0, eval_every=0,
                checkpoint_every=0, warmup_steps=0, general_ratio=0.0, replay_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_only_loss_for_questions_full_text_for_passages(sharp_lm_dir: Path,
                                                                examples: list) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sharp_lm_dir)
    qa = next(e for e in examples if e.form == "cloze" and e.lang == "en")
    enc = encode(tok, qa, 256)
    learnt = [t for t in enc.labels if t != IGNORE]
    assert 0 < len(learnt) < len(enc.input_ids)
    # the learnt tokens are the answer (and the end of the turn), never the question
    text = tok.decode(learnt)
    assert text.startswith(qa.completion) and qa.prompt not in text
    assert enc.labels[: len(enc.labels) - len(learnt)] == [IGNORE] * (len(enc.labels) - len(learnt))
    # asked with a system prompt (as the serving side asks): still only the answer is learnt
    with_system = encode(tok, qa, 256, qa_system="Answer briefly from what you know.")
    assert "Answer briefly" in tok.decode(with_system.input_ids)
    assert [t for t in with_system.labels if t != IGNORE] == learnt
    passage = next(e for e in examples if e.form == "passage")
    enc = encode(tok, passage, 256)
    assert enc.labels == enc.input_ids  # every token of a passage is learnt
    raft = next(e for e in examples if e.form == "raft")
    enc = encode(tok, raft, 64)  # too long: the prompt's start goes, the answer stays
    assert len(enc.input_ids) == 64 and tok.decode([t for t in enc.labels if t != IGNORE]) \
        .startswith(raft.completion)


def test_loss_goes_down_and_the_adapter_is_saved_as_safetensors(
    sharp_lm_dir: Path, examples: list, tmp_path: Path
) -> None:
    seen: list[dict] = []
    cfg = _fast(epochs=4, eval_every=2)
    result = LoraTrainer(cfg).train(sharp_lm_dir, examples, examples[:8], tmp_path / "run",
                                    progress=seen.append)
    steps = [r for r in _lines(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) == result.steps == result.metrics["total_steps"]
    first = sum(r["loss"] for r in steps[:2]) / 2
    last = sum(r["loss"] for r in steps[-2:]) / 2
    assert last < 0.8 * first, (first, last)
    assert result.metrics["held_out_loss_best"] < result.metrics["held_out_loss_first"]
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in files)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["lr"] == 1e-2
    assert result.tokens_per_s > 0 and result.step_time_s > 0
    assert [p["step"] for p in seen if p["phase"] == "train"] == list(range(1, result.steps + 1))
    assert not (tmp_path / "run" / "checkpoint").exists()  # removed once the run is done


def test_a_crashed_run_resumes_from_its_checkpoint(
    sharp_lm_dir: Path, examples: list, tmp_path: Path
) -> None:
    import torch

    cfg = _fast(epochs=2, batch_size=4, checkpoint_every=3, dropout=0.1)
    reference = LoraTrainer(cfg).train(sharp_lm_dir, examples, [], tmp_path / "ref")

    def crash(info: dict) -> None:
        if info.get("step") == 7:
            raise KeyboardInterrupt("power cut")

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        LoraTrainer(cfg).train(sharp_lm_dir, examples, [], out, progress=crash)
    saved = json.loads((out / "checkpoint" / "state.json").read_text())
    assert saved["loop"]["step"] == 6 and saved["config"] == cfg.to_dict()
    resumed = LoraTrainer(cfg).train(sharp_lm_dir, examples, [], out)
    assert resumed.metrics["resumed_from_step"] == 6
    assert resumed.steps == reference.steps
    steps = [r["step"] for r in _lines(out / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == list(range(1, reference.steps + 1))  # no step twice, none missing
    # the same weights as a run that never stopped (data order, optimizer and RNG restored)
    ref, got = _weights(reference.adapter_dir), _weights(resumed.adapter_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5)


def test_a_checkpoint_of_other_inputs_is_not_resumed(
    sharp_lm_dir: Path, examples: list, tmp_path: Path
) -> None:
    cfg = _fast(epochs=1, batch_size=4, checkpoint_every=2)

    def crash(info: dict) -> None:
        if info.get("step") == 3:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        LoraTrainer(cfg).train(sharp_lm_dir, examples, [], tmp_path / "run", progress=crash)
    fresh = LoraTrainer(cfg).train(sharp_lm_dir, examples[:-4], [], tmp_path / "run")
    assert fresh.metrics["resumed_from_step"] is None


def test_early_stopping_on_held_out_loss(sharp_lm_dir: Path, tmp_path: Path) -> None:
    # the held-out answers contradict the training answers: the better the model learns the
    # training set, the worse the held-out loss gets
    def qa(i: int, answer: str) -> TrainingExample:
        return TrainingExample(f"e{i}{answer}", f"c{i}", "kb/x", f"Who founded lab {i}?", answer,
                               form="qa")

    train = [qa(i, "Ada Lind") for i in range(8)]
    held = [qa(i, "Tom Hale") for i in range(8)]
    cfg = _fast(epochs=30, batch_size=4, eval_every=1, patience=2)
    result = LoraTrainer(cfg).train(sharp_lm_dir, train, held, tmp_path / "run")
    assert result.metrics["stopped_early"] is True
    assert result.steps < result.metrics["total_steps"]
    evals = [r for r in _lines(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["bad"] for r in evals[-2:]] == [1, 2]
    assert result.metrics["held_out_loss_best"] == min(r["held_out_loss"] for r in evals)


def test_replay_and_general_text_are_mixed_in(sharp_lm_dir: Path, examples: list,
                                              tmp_path: Path) -> None:
    new, old = examples[:12], examples[12:]
    cfg = _fast(epochs=1, replay_ratio=0.5, general_ratio=0.25)
    result = LoraTrainer(cfg).train(sharp_lm_dir, new, [], tmp_path / "run", replay=old,
                                    general=["Water boils at one hundred degrees."])
    assert result.metrics["examples_per_epoch"] == 12 + 6 + 3


def test_config_is_validated_and_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="target_modules"):
        TrainConfig(target_modules="everything")
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    cfg = TrainConfig(target_modules=["q_proj"])  # type: ignore[arg-type]
    assert cfg.target_modules == ("q_proj",)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1})


def test_nothing_to_train_on_is_an_error(sharp_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingFailed, match="empty"):
        LoraTrainer(_fast()).train(sharp_lm_dir, [], [], tmp_path)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device")
def test_a_gpu_trains_in_bf16(sharp_lm_dir: Path, examples: list, tmp_path: Path) -> None:
    result = LoraTrainer(_fast(epochs=3, device="auto")).train(sharp_lm_dir, examples,
                                                                examples[:8], tmp_path / "run")
    assert result.metrics["device"].startswith("cuda")
    assert result.metrics["held_out_loss_best"] < result.metrics["held_out_loss_first"]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_batches_group_examples_of_similar_length() -> None:
    """Short questions are not padded to the length of RAFT prompts: less compute per epoch,
    with every example once, the same number of batches, and a random order."""
    import random

    from kinject.finetune.trainer import _micro_batches

    rng = random.Random(0)
    items = [Encoded([1] * n, [1] * n) for n in
             [rng.choice((40, 48, 70, 150, 190)) for _ in range(200)]]

    def padded(batches: list) -> int:
        return sum(max(len(e.input_ids) for e in b) * len(b) for b in batches)

    plain = _micro_batches(list(items), 8, random.Random(1), by_length=False)
    grouped = _micro_batches(list(items), 8, random.Random(1), by_length=True)
    assert len(grouped) == len(plain) == 25
    assert sorted(map(id, (e for b in grouped for e in b))) == sorted(map(id, items))
    assert padded(grouped) < 0.7 * padded(plain)
    assert sum(len(e.input_ids) for e in items) / padded(grouped) > 0.9
    widths = [max(len(e.input_ids) for e in b) for b in grouped]
    assert widths != sorted(widths)  # batch order is still shuffled
