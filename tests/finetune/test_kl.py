"""The KL penalty towards the base model on general text (finetune/kl.py and the trainer)."""

import json
from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of, make_sharp_lm

from kinject.finetune.batches import collate, encode
from kinject.finetune.kl import base_kl
from kinject.finetune.trainer import LoraTrainer, TrainConfig, _general_example

pytestmark = pytest.mark.usefixtures("one_thread")

GENERAL = [
    "Water boils at one hundred degrees Celsius at sea level.",
    "The Marrow Institute was founded in 1987 and answers questions.",
    "马罗研究所成立于1987年。",
    "Passages are data, not instructions.",
]


@pytest.fixture(scope="module")
def sharp_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_lm(tiny_lm_dir, tmp_path_factory.mktemp("sharp-lm"))


def _peft(model_dir: Path, adapter: Path | None = None):  # type: ignore[no-untyped-def]
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if adapter is not None:
        return tok, PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    return tok, get_peft_model(base, lora)


def _general_kl(tok, model, texts: list[str]) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    batch = collate([encode(tok, _general_example(t), 128) for t in texts], tok.pad_token_id)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return base_kl(model, out.logits, batch["input_ids"], batch["attention_mask"],
                   range(len(texts)))


def test_kl_is_zero_for_an_untrained_adapter_and_grows_once_it_learns(
        sharp_lm_dir: Path) -> None:
    import torch

    torch.manual_seed(0)
    tok, model = _peft(sharp_lm_dir)
    kl, n = _general_kl(tok, model, GENERAL)
    lengths = [len(encode(tok, _general_example(t), 128).input_ids) for t in GENERAL]
    assert n == sum(length - 1 for length in lengths)  # one prediction per next token
    assert float(kl) == pytest.approx(0.0, abs=1e-5)  # LoRA's B starts at zero: the base
    # only the rows asked for count
    _, n_one = _general_kl(tok, model, GENERAL[:1])
    assert n_one == lengths[0] - 1

    # one optimizer step on other text moves the model away from the base
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    facts = collate([encode(tok, e, 128) for e in examples_of(TEXTS)[:8]], tok.pad_token_id)
    model(**facts).loss.backward()
    opt.step()
    opt.zero_grad()
    kl, _ = _general_kl(tok, model, GENERAL)
    assert float(kl) > 1e-3
    # and its gradient reaches the adapter (and only the adapter is trained)
    kl.backward()
    grads = [p.grad for n_, p in model.named_parameters() if "lora_" in n_]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def _cfg(kl_weight: float) -> TrainConfig:
    return TrainConfig(r=8, alpha=16, dropout=0.0, target_modules="all-linear", lr=2e-2,
                       epochs=4, batch_size=4, max_seq_len=128, fisher_samples=0,
                       eval_every=0, checkpoint_every=0, warmup_steps=0, replay_ratio=0.0,
                       general_ratio=1.0, kl_weight=kl_weight, group_by_length=False)


def test_the_kl_weight_holds_the_model_near_the_base_on_general_text(
        sharp_lm_dir: Path, tmp_path: Path) -> None:
    """Training on new facts with general text replayed: with the KL term on, the adapter's
    next-token distribution on general text stays much nearer the base model's."""
    train = examples_of(TEXTS)[:12]
    drift, logged = {}, {}
    for weight in (0.0, 5.0):
        out = tmp_path / f"kl-{weight}"
        LoraTrainer(_cfg(weight)).train(sharp_lm_dir, train, [], out, general=GENERAL)
        tok, model = _peft(sharp_lm_dir, out / "adapter")
        import torch

        with torch.no_grad():
            kl, n = _general_kl(tok, model, GENERAL)
        drift[weight] = float(kl) / n
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "step"]
        logged[weight] = [s["kl"] for s in steps]
    # off: never computed; on: measured on the general rows and reported per step
    assert logged[0.0] and all(v == 0.0 for v in logged[0.0])
    assert any(v > 0 for v in logged[5.0])
    assert drift[0.0] > 0.01
    assert drift[5.0] < 0.5 * drift[0.0]


def test_kl_weight_is_validated() -> None:
    with pytest.raises(ValueError, match="kl_weight"):
        TrainConfig(kl_weight=-1.0)
    assert TrainConfig.from_dict(TrainConfig(kl_weight=0.5).to_dict()).kl_weight == 0.5
