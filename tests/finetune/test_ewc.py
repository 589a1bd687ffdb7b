"""Online EWC: the penalty, the Fisher merge, safetensors state, and less forgetting."""

from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of, make_sharp_lm

from kinject.finetune.ewc import EwcPenalty, EwcState
from kinject.finetune.trainer import LoraTrainer, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

NEW_TEXTS = [
    "Ida Brook was born in 1966 in Wexley. She works for Copper Mills.",
    "Olaf Renn was born in 1958 in Dunmere. He works for Saltworks Guild.",
    "蓝湖科技成立于2003年，位于杭州。",
]


@pytest.fixture(scope="module")
def sharp_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_lm(tiny_lm_dir, tmp_path_factory.mktemp("sharp-lm"))


def _state(fisher: list[float], theta: list[float]) -> EwcState:
    import torch

    return EwcState({"w": torch.tensor(fisher)}, {"w": torch.tensor(theta)}, cycles=1)


def test_penalty_is_zero_at_the_anchor_and_grows_with_the_drift() -> None:
    import torch

    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    # Fisher [1, 3] is used scaled to mean 1: [0.5, 1.5]
    penalty = EwcPenalty(_state([1.0, 3.0], [1.0, -1.0]), [("w", p)], lam=2.0)
    assert float(penalty()) == 0.0
    with torch.no_grad():
        p.add_(torch.tensor([1.0, 1.0]))
    assert float(penalty()) == pytest.approx(0.5 * 2.0 * (0.5 + 1.5))
    with torch.no_grad():
        p.add_(torch.tensor([1.0, 1.0]))  # twice the drift, four times the penalty
    value = penalty()
    assert float(value) == pytest.approx(4 * 2.0)
    value.backward()  # the pull back: lambda * F * (theta - theta_prev)
    assert p.grad is not None
    torch.testing.assert_close(p.grad, torch.tensor([2.0 * 0.5 * 2, 2.0 * 1.5 * 2]))


def test_parameters_that_matter_more_are_held_harder() -> None:
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    penalty = EwcPenalty(_state([0.1, 10.0], [0.0, 0.0]), [("base_model.model.w", p)], lam=1.0)
    with torch.no_grad():
        p.copy_(torch.tensor([1.0, 0.0]))
    low = float(penalty())
    with torch.no_grad():
        p.copy_(torch.tensor([0.0, 1.0]))
    assert float(penalty()) > 50 * low  # PEFT's name prefix is matched too


def test_fisher_merge_is_a_decayed_sum_and_state_round_trips(tmp_path: Path) -> None:
    import torch

    first = EwcState(gamma=0.5).merge({"w": torch.tensor([2.0, 4.0])}, {"w": torch.zeros(2)})
    second = first.merge({"w": torch.tensor([1.0, 1.0])}, {"w": torch.ones(2)})
    torch.testing.assert_close(second.fisher["w"], torch.tensor([2.0, 3.0]))  # 0.5*F + F_new
    torch.testing.assert_close(second.theta["w"], torch.ones(2))  # anchored at the new end
    assert second.cycles == 2
    path = second.save(tmp_path / "ewc_state.safetensors")
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and b"fisher.w" in raw[8:8 + header_len]  # safetensors, no pickle
    loaded = EwcState.load(path)
    assert loaded.cycles == 2 and loaded.gamma == 0.5
    torch.testing.assert_close(loaded.fisher["w"], second.fisher["w"])
    with pytest.raises(ValueError, match="gamma"):
        EwcState(gamma=0.0)


def _cfg(**kw: object) -> TrainConfig:
    base = dict(r=8, alpha=16, dropout=0.0, target_modules="all-linear", lr=1e-2, epochs=3,
                batch_size=8, max_seq_len=96, fisher_samples=24, eval_every=0,
                checkpoint_every=0, warmup_steps=0, general_ratio=0.0, replay_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _loss(base: Path, adapter: Path, examples: list) -> float:
    """Mean answer/passage loss of base + adapter on the examples."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kinject.finetune.batches import collate, encode

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    model.eval()
    with torch.no_grad():
        losses = [float(model(**collate([encode(tok, e, 96)], tok.pad_token_id)).loss)
                  for e in examples]
    return sum(losses) / len(losses)


def test_ewc_forgets_less_than_plain_lora(sharp_lm_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    old, new = examples_of(TEXTS, "old"), examples_of(NEW_TEXTS, "new")
    first = LoraTrainer(_cfg()).train(sharp_lm_dir, old, [], tmp_path / "c1")
    state = first.ewc
    assert state.cycles == 1 and state.fisher
    assert all(float(f.min()) >= 0 for f in state.fisher.values())
    assert sum(float(f.sum()) for f in state.fisher.values()) > 0
    assert (tmp_path / "c1" / "ewc_state.safetensors").is_file()

    plain = LoraTrainer(_cfg(ewc_lambda=0.0)).train(
        sharp_lm_dir, new, [], tmp_path / "plain", init_adapter=first.adapter_dir, ewc=state)
    held = LoraTrainer(_cfg(ewc_lambda=200.0)).train(
        sharp_lm_dir, new, [], tmp_path / "ewc", init_adapter=first.adapter_dir, ewc=state)
    assert held.ewc.cycles == 2

    anchor = load_file(str(first.adapter_dir / "adapter_model.safetensors"))

    def drift(result: object) -> float:
        w = load_file(str(result.adapter_dir / "adapter_model.safetensors"))  # type: ignore
        return sum(float(((w[k] - anchor[k]) ** 2).sum()) for k in anchor)

    assert drift(held) < 0.5 * drift(plain)
    before = _loss(sharp_lm_dir, first.adapter_dir, old)
    forgot_plain = _loss(sharp_lm_dir, plain.adapter_dir, old) - before
    forgot_ewc = _loss(sharp_lm_dir, held.adapter_dir, old) - before
    assert forgot_ewc < forgot_plain, (forgot_ewc, forgot_plain)
    # and it still learns the new cycle's data
    assert _loss(sharp_lm_dir, held.adapter_dir, new) < _loss(sharp_lm_dir, first.adapter_dir,
                                                              new)
