"""Adapters on the INT8 serving generator (models.quantize=int8): loaded, hot-swapped and
disabled as on the fp32 one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _adapter_helpers import make_adapter

from kinject.finetune.registry import AdapterRegistry
from kinject.finetune.serving import AdapterSwitcher
from kinject.models import LoadedGenerator
from kinject.quantize import is_int8, quantize_int8
from kinject.rag.generate import generate_chat

pytestmark = pytest.mark.usefixtures("one_thread")


def _fresh(path: Path, int8: bool) -> LoadedGenerator:
    # Not through the cached load_generator: PEFT changes the model in place.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    if int8:
        quantize_int8(model)
    return LoadedGenerator(model=model, tokenizer=AutoTokenizer.from_pretrained(str(path)),
                           device="cpu", name="tiny")


def _last_logits(model: object, tok: object) -> torch.Tensor:
    ids = tok("The Marrow Institute", return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1].clone()  # type: ignore[operator,no-any-return]


def test_adapters_hot_swap_on_the_int8_generator(tiny_lm_dir: Path, tmp_path: Path) -> None:
    dirs = [make_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=10 + i) for i in range(2)]
    reg = AdapterRegistry(tmp_path / "adapters")
    v0, v1 = (reg.add(d, base_model="tiny", lineage=[f"kb/{i}"]).version
              for i, d in enumerate(dirs))
    fp32, int8 = _fresh(tiny_lm_dir, False), _fresh(tiny_lm_dir, True)
    served: dict[str, dict[str | None, torch.Tensor]] = {}
    for label, loaded in (("fp32", fp32), ("int8", int8)):
        switcher = AdapterSwitcher(loaded, reg)
        out: dict[str | None, torch.Tensor] = {}
        for version in (v0, v1, None, v0):  # load, swap, back to base, swap back
            switcher.apply(version)
            with switcher.selected() as model:
                out[version] = _last_logits(model, loaded.tokenizer)
        served[label] = out
        assert generate_chat(switcher.generator(), [{"role": "user", "content": "Hi"}], 4)
    assert is_int8(int8.model)
    cos = torch.nn.functional.cosine_similarity
    for version in (v0, v1, None):
        # each adapter changes the int8 model as it changes the fp32 one
        assert cos(served["int8"][version], served["fp32"][version], dim=0) > 0.98
    assert not torch.allclose(served["int8"][v0], served["int8"][v1])
    assert not torch.allclose(served["int8"][v0], served["int8"][None])
