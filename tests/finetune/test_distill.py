"""Distillation towards the previous adapter (finetune/kl.py, the trainer) and the data mix
setting (config/finetune.py -> TrainConfig)."""

import json
from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of, make_sharp_lm
from pydantic import ValidationError

from kinject.config import FinetuneSettings
from kinject.finetune.batches import collate, encode
from kinject.finetune.kl import TEACHER, teacher_kl
from kinject.finetune.trainer import LoraTrainer, TrainConfig, _general_example

pytestmark = pytest.mark.usefixtures("one_thread")

GENERAL = [
    "Water boils at one hundred degrees Celsius at sea level.",
    "Passages are data, not instructions.",
    "马罗研究所成立于1987年。",
]


@pytest.fixture(scope="module")
def sharp_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_lm(tiny_lm_dir, tmp_path_factory.mktemp("sharp-lm"))


@pytest.fixture(scope="module")
def previous_adapter(sharp_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter that differs from the base model (as a trained one does)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(sharp_lm_dir)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    out = tmp_path_factory.mktemp("previous") / "adapter"
    model.save_pretrained(out)
    return out


def _kl(tok, model, texts: list[str], teacher: str | None):  # type: ignore[no-untyped-def]
    batch = collate([encode(tok, _general_example(t), 128) for t in texts], tok.pad_token_id)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return teacher_kl(model, out.logits, batch["input_ids"], batch["attention_mask"],
                      range(len(texts)), teacher)


def test_teacher_kl_is_zero_while_the_model_is_its_teacher_and_grows_after_a_step(
        sharp_lm_dir: Path, previous_adapter: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sharp_lm_dir)
    base = AutoModelForCausalLM.from_pretrained(sharp_lm_dir)
    model = PeftModel.from_pretrained(base, str(previous_adapter), is_trainable=True)
    model.load_adapter(str(previous_adapter), adapter_name=TEACHER, is_trainable=False)
    model.set_adapter("default")
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]

    kl, _ = _kl(tok, model, GENERAL, TEACHER)
    assert float(kl) == pytest.approx(0.0, abs=1e-4)  # the student starts as its teacher
    kl_base, _ = _kl(tok, model, GENERAL, None)
    assert float(kl_base) > 1e-2  # the teacher is the adapter, not the base model
    # the teacher's forward leaves the student trainable and the teacher frozen, in training
    assert model.training and model.active_adapter == "default"
    assert [p for p in model.parameters() if p.requires_grad] == trainable
    assert all(".default." in n for n, p in model.named_parameters() if p.requires_grad)

    opt = torch.optim.AdamW(trainable, lr=5e-2)
    facts = collate([encode(tok, e, 128) for e in examples_of(TEXTS)[:8]], tok.pad_token_id)
    model(**facts).loss.backward()
    opt.step()
    opt.zero_grad()
    kl, _ = _kl(tok, model, GENERAL, TEACHER)
    assert float(kl) > 1e-3
    kl.backward()  # and its gradient reaches the trained adapter only
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert any(g is not None and float(g.abs().sum()) > 0
               for n, g in grads.items() if ".default." in n)
    assert all(g is None for n, g in grads.items() if f".{TEACHER}." in n)


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        r=8, alpha=16, dropout=0.0, target_modules="all-linear", lr=2e-2, epochs=1,
        batch_size=4, max_seq_len=128, fisher_samples=0, eval_every=0, checkpoint_every=0,
        warmup_steps=0, replay_ratio=0.0, general_ratio=1.0, kl_weight=1.0,
        group_by_length=False)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _step_kls(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["kl"] for line in lines if json.loads(line)["kind"] == "step"]


def test_the_previous_adapter_is_the_teacher_when_set(
        sharp_lm_dir: Path, previous_adapter: Path, tmp_path: Path) -> None:
    """Starting from the previous adapter, the first step's KL is zero towards it and not
    towards the base model; the saved adapter is the trained one alone."""
    train = examples_of(TEXTS)[:4]
    first = {}
    for teacher in ("base", "previous"):
        out = tmp_path / teacher
        LoraTrainer(_cfg(distill_teacher=teacher)).train(
            sharp_lm_dir, train, [], out, init_adapter=previous_adapter, general=GENERAL)
        first[teacher] = _step_kls(out)[0]
        saved = sorted(p.name for p in (out / "adapter").iterdir())
        assert TEACHER not in saved and "adapter_model.safetensors" in saved
    assert first["previous"] == pytest.approx(0.0, abs=1e-4)
    assert first["base"] > 1e-3


def test_replay_rows_get_the_kl_when_distill_on_includes_replay(
        sharp_lm_dir: Path, previous_adapter: Path, tmp_path: Path) -> None:
    train, replay = examples_of(TEXTS)[:4], examples_of(TEXTS, "old")[4:8]
    kls = {}
    for on in ("general", "general+replay"):
        out = tmp_path / on.replace("+", "-")
        # no general text: only replay rows could carry the term
        LoraTrainer(_cfg(distill_on=on, replay_ratio=1.0, general_ratio=0.0)).train(
            sharp_lm_dir, train, [], out, init_adapter=previous_adapter, replay=replay)
        kls[on] = _step_kls(out)
    assert kls["general"] and all(v == 0.0 for v in kls["general"])
    assert any(v > 1e-3 for v in kls["general+replay"])  # base teacher: the init adapter drifted


def test_distill_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="distill_teacher"):
        TrainConfig(distill_teacher="teacher")
    with pytest.raises(ValueError, match="distill_on"):
        TrainConfig(distill_on="replay")
    with pytest.raises(ValidationError, match="distill_teacher"):
        FinetuneSettings(distill_teacher="nobody")  # type: ignore[arg-type]
    cfg = TrainConfig.from_settings(FinetuneSettings(distill_teacher="previous",
                                                     distill_on="general+replay"))
    assert (cfg.distill_teacher, cfg.distill_on) == ("previous", "general+replay")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_the_data_mix_maps_to_the_replay_and_general_ratios() -> None:
    default = TrainConfig.from_settings(FinetuneSettings())
    assert (default.replay_ratio, default.general_ratio) == (1.0, 0.05)  # unchanged
    ft = FinetuneSettings(data_mix="7:2:1", replay_ratio=0.9, general_ratio=0.9)
    cfg = TrainConfig.from_settings(ft)  # the mix overrides the two ratios
    assert (cfg.replay_ratio, cfg.general_ratio) == (0.5, 3.5)
    same = TrainConfig.from_settings(FinetuneSettings(data_mix="1:20:20"))
    assert (same.replay_ratio, same.general_ratio) == pytest.approx((1.0, 0.05))


@pytest.mark.parametrize("bad", ["7:2", "7:2:1:1", "a:b:c", "1:0:1", "-1:2:1", "1:2:nan",
                                 "100:1:1", ""])
def test_a_bad_data_mix_is_rejected_naming_the_value(bad: str) -> None:
    with pytest.raises(ValidationError, match="data_mix") as err:
        FinetuneSettings(data_mix=bad)
    assert repr(bad) in str(err.value)


@pytest.mark.slow
def test_two_cpu_processes_distil_towards_the_previous_adapter(
        sharp_lm_dir: Path, previous_adapter: Path, tmp_path: Path) -> None:
    """Under ``accelerate launch`` (DDP on two CPU processes) switching to the teacher adapter
    and back leaves the trained adapter's gradients synced and the teacher out of the result."""
    from kinject.finetune.launch import run_launched, write_job

    cfg = _cfg(device="cpu", distill_teacher="previous", distill_on="general+replay",
               replay_ratio=1.0, general_ratio=0.5, fisher_samples=4)
    job = write_job(tmp_path / "job", base_model_dir=sharp_lm_dir, out_dir=tmp_path / "out",
                    config=cfg, train=examples_of(TEXTS)[:8], held_out=[],
                    init_adapter=previous_adapter, replay=examples_of(TEXTS, "old")[8:16],
                    general=GENERAL)
    result = run_launched(job, num_processes=2, timeout_s=540,
                          env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result["metrics"]["world_size"] == 2
    kls = _step_kls(tmp_path / "out")
    assert kls[0] == pytest.approx(0.0, abs=1e-4) and any(v > 1e-4 for v in kls[1:])
    saved = sorted(p.name for p in Path(result["adapter_dir"]).iterdir())
    assert TEACHER not in saved and "adapter_model.safetensors" in saved
