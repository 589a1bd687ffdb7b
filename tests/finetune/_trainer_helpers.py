"""Fixtures for the trainer tests: a tiny model that can learn quickly, on one thread."""

from __future__ import annotations

from pathlib import Path

from kinject.finetune.augment import build_examples
from kinject.types import Chunk, TrainingExample

TEXTS = [
    "Ada Lind was born in 1990 in Osk. She works for Tallow Labs.",
    "Tom Hale was born in 1971 in Fenwick. He works for Harbour Board.",
    "马罗研究所成立于1987年，位于大理。",
]


def examples_of(texts: list[str], prefix: str = "kb") -> list[TrainingExample]:
    out = []
    for i, text in enumerate(texts):
        chunk = Chunk(f"{prefix}-c{i}", f"{prefix}-d{i}", f"{prefix}/{i}", text,
                      lang="zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en")
        out += build_examples(chunk, [t for t in texts if t != text])
    return out


def make_sharp_lm(tiny_lm_dir: Path, out: Path) -> Path:
    """The tiny Llama with an output layer 25x larger. A random model with 32-wide hidden
    states and 0.02-scaled weights cannot make any logit larger than about 0.6, so its loss
    stays near ln(vocab) whatever an adapter does; a trained model's output layer can be
    confident, and so can this one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out
