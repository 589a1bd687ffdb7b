"""Real PEFT adapter folders for the tiny test model, made without a trainer."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_adapter(base_dir: Path, out: Path, seed: int, scale: float = 0.5) -> Path:
    """A LoRA adapter (r=4 on q_proj, v_proj) with random B so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                            target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    peft.save_pretrained(str(out))
    return out


def logits_of(model: object, tokenizer: object, text: str = "The Marrow Institute") -> object:
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1].clone()  # type: ignore[operator]


@pytest.fixture(scope="module")
def learnable_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, wider and with larger initial weights: the fixture's 32-wide model
    with 0.02-scale weights bounds its logits so tightly that a LoRA adapter cannot make one
    answer clearly likelier than another, and facts could not be learnt at all."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(str(tiny_lm_dir))
    cfg.initializer_range, cfg.hidden_size, cfg.intermediate_size = 0.2, 64, 128
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("learnable-lm")
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_lm_dir)).save_pretrained(str(out))
    return out
