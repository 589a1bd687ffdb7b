"""models.quantize: the serving generator with dynamic INT8 linear layers on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kinject.config import load_settings
from kinject.errors import ConfigError
from kinject.models import load_generator
from kinject.quantize import is_int8, resolve_quantize
from kinject.rag.generate import generate_chat

pytestmark = pytest.mark.usefixtures("one_thread")


def _last_logits(model: object, tok: object) -> torch.Tensor:
    ids = tok("The Marrow Institute", return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1].clone()  # type: ignore[operator,no-any-return]


def test_setting_loads_an_int8_generator_that_writes(tiny_lm_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, models={"quantize": "int8"})
    m = settings.models
    loaded = load_generator(str(tiny_lm_dir), settings.models_dir, "cpu", m.dtype, m.quantize)
    fp32 = load_generator(str(tiny_lm_dir), settings.models_dir, "cpu", m.dtype, "none")
    assert loaded.model is not fp32.model  # the fp32 load is its own, untouched
    linears = [mod for mod in loaded.model.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(type(mod).__name__ == "Int8Linear" for mod in linears)
    assert all(mod.weight is None for mod in linears)  # no fp32 copy of the weights kept
    assert is_int8(loaded.model) and not is_int8(fp32.model)
    msgs = [{"role": "user", "content": "When was the Marrow Institute founded?"}]
    text = generate_chat(loaded, msgs, max_new_tokens=8)
    assert isinstance(text, str) and text
    # int8 is an approximation of the same model, not another one
    a, b = (_last_logits(g.model, g.tokenizer) for g in (loaded, fp32))
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.98


def test_auto_is_int8_on_the_cpu_only_and_int8_is_refused_on_a_gpu() -> None:
    assert resolve_quantize("auto", "cpu") == "ct2-int8"  # the measured winner (int8.py)
    assert resolve_quantize("auto", "cuda") == "none"
    assert resolve_quantize("none", "cpu") == "none"
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_quantize("int8", "cuda")


@pytest.mark.slow
def test_smollm2_int8_answers_a_simple_question_as_fp32_does(smollm2_cache: Path) -> None:
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    answers = {q: generate_chat(load_generator("smollm2", smollm2_cache, "cpu", "auto", q),
                                msgs, max_new_tokens=12) for q in ("none", "int8", "ct2-int8")}
    assert "paris" in answers["none"].lower(), answers
    assert "paris" in answers["int8"].lower(), answers
    assert answers["ct2-int8"] == answers["none"], answers  # the CTranslate2 copy, the same
