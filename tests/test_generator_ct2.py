"""models.quantize=ct2-int8: the serving generator on a CTranslate2 INT8 copy of the model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from kinject.config import load_settings
from kinject.errors import ConfigError
from kinject.generator_ct2 import Ct2Generators, Ct2Model, convert_obstacle
from kinject.models import load_generator
from kinject.quantize import resolve_quantize
from kinject.rag.generate import generate_batch, stream_chat

pytestmark = pytest.mark.usefixtures("one_thread")

CHATS = [[{"role": "user", "content": "When was the Marrow Institute founded?"}],
         [{"role": "user", "content": "Passages are data."}]]


def test_a_stream_stops_when_its_stopping_criteria_say_so(tiny_lm_dir: Path,
                                                         tmp_path: Path) -> None:
    # rag.generate.stream_chat stops a stream whose client went away through transformers'
    # stopping_criteria; the INT8 model refused the argument, so every streamed answer on it
    # failed, and without the check a closed stream would run out its whole budget.
    ct2 = load_generator(str(tiny_lm_dir), tmp_path, "cpu", "float32", "ct2-int8")
    tok = ct2.tokenizer
    ids = torch.tensor([tok("When was the Marrow Institute founded?")["input_ids"]])

    class Tokens:
        def __init__(self) -> None:
            self.got: list[int] = []

        def put(self, value: torch.Tensor) -> None:
            self.got.extend(value.tolist())

        def end(self) -> None:
            pass

    def stream(stop: object) -> int:
        seen = Tokens()
        out = ct2.model.generate(ids, torch.ones_like(ids), max_new_tokens=40,
                                 min_new_tokens=40, streamer=seen, stopping_criteria=stop)
        assert len(seen.got) == out.shape[1]  # what was streamed is what was returned
        return int(out.shape[1] - ids.shape[1])

    def after_three(input_ids: torch.Tensor, scores: object) -> torch.Tensor:
        return torch.tensor([input_ids.shape[1] - ids.shape[1] >= 3])

    assert stream(None) == 40
    assert stream([after_three]) == 3


def test_the_int8_copy_writes_what_the_torch_model_writes(tiny_lm_dir: Path,
                                                          tmp_path: Path) -> None:
    fp32 = load_generator(str(tiny_lm_dir), tmp_path, "cpu", "float32", "none")
    ct2 = load_generator(str(tiny_lm_dir), tmp_path, "cpu", "float32", "ct2-int8")
    assert isinstance(ct2.model, Ct2Model)
    assert (tmp_path / f"{ct2.model.folder.name}" / "model.bin").is_file()  # in the cache
    # Greedy, two prompts of different lengths in one left-padded batch: the same text. The
    # tiny model's weights are small (0.02 scale), so INT8's per-channel rounding moves its
    # logits far less than the gaps between the first and second choices: equal, not close.
    want = generate_batch(fp32, CHATS, [10, 10])
    got = generate_batch(ct2, CHATS, [10, 10])
    assert got == want and all(want)
    assert "".join(stream_chat(ct2, CHATS[0], 10)) == want[0]  # streamed piece by piece
    assert generate_batch(ct2, CHATS, [3, 10])[0] != want[0]  # each row's own limit


def test_a_bad_quantize_value_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models.quantize.*'ct2-int8'"):
        load_settings(data_dir=tmp_path, models={"quantize": "int4"})
    with pytest.raises(ConfigError, match="must be one of auto, none, int8, ct2-int8"):
        resolve_quantize("ct2_int8", "cpu")
    with pytest.raises(ConfigError, match="CPU or CUDA"):
        resolve_quantize("ct2-int8", "mps")
    assert resolve_quantize("ct2-int8", "cuda") == "ct2-int8"
    settings = load_settings(data_dir=tmp_path, models={"quantize": "ct2-int8"})
    assert settings.models.quantize == "ct2-int8"


def test_the_base_copy_is_converted_once_and_reused(tiny_lm_dir: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    with caplog.at_level(logging.INFO, logger="kinject.models"):
        first = Ct2Generators(str(tiny_lm_dir), "tiny", tmp_path, tok, "cpu")
        stamp = (first.base.folder / "model.bin").stat().st_mtime_ns
        second = Ct2Generators(str(tiny_lm_dir), "tiny", tmp_path, tok, "cpu")
    assert second.base.folder == first.base.folder
    assert (second.base.folder / "model.bin").stat().st_mtime_ns == stamp
    said = [r.getMessage() for r in caplog.records]
    assert sum("preparing" in m for m in said) == 1
    assert any(m.startswith("prepared the generator tiny as CTranslate2 INT8 in ")
               for m in said)  # the converter reports no progress: kinject says when it ends
    assert not list(tmp_path.glob(".*.tmp"))  # no scratch folder left behind



def test_a_model_the_int8_copy_cannot_run_is_served_with_torch_without_converting(
        tiny_lm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Attention heads narrower than hidden_size / heads (an explicit head_dim) convert
    without a word under a converter that ignores head_dim, and then CTranslate2 failed
    every answer ("axis 2 has dimension 64 but expected 128"). The config says so before a
    conversion of minutes: none is made, and torch serves, said in one line."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(str(tiny_lm_dir))
    cfg.hidden_size, cfg.intermediate_size = 64, 128  # head_dim stays 8: 4 heads x 8 != 64
    torch.manual_seed(0)
    base = tmp_path / "narrow-heads"
    LlamaForCausalLM(cfg).save_pretrained(str(base))
    AutoTokenizer.from_pretrained(str(tiny_lm_dir)).save_pretrained(str(base))
    fp32 = load_generator(str(base), tmp_path, "cpu", "float32", "none")
    served = load_generator(str(base), tmp_path, "cpu", "float32", "ct2-int8")
    assert not isinstance(served.model, Ct2Model)
    assert not list(tmp_path.glob("*ct2*")) and not list(tmp_path.glob(".*.tmp"))
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "attention heads are 8 wide, not hidden_size / heads = 16" in said[0]
    assert generate_batch(served, CHATS, [8, 8]) == generate_batch(fp32, CHATS, [8, 8])


def test_explicit_head_dims_a_converter_reads_are_not_refused(tmp_path: Path) -> None:
    # Qwen3's converter reads head_dim (so does Gemma's): its narrower heads convert and write
    from transformers import LlamaConfig, Qwen3Config

    qwen3 = tmp_path / "qwen3"
    Qwen3Config(hidden_size=64, num_attention_heads=4, head_dim=32).save_pretrained(qwen3)
    assert convert_obstacle(str(qwen3)) is None
    llama = tmp_path / "llama"
    LlamaConfig(hidden_size=64, num_attention_heads=4).save_pretrained(llama)
    assert convert_obstacle(str(llama)) is None  # head_dim = 64 / 4: nothing against it
