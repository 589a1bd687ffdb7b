"""Model settings: embedders, generator, reader, CLIP, Whisper; where conversions are kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


def default_models_cache_dir() -> Path:
    """The user's cache for converted models (``$XDG_CACHE_HOME/kinject/models``, else
    ``~/.cache/kinject/models``): one conversion serves every data dir of the user."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kinject" / "models"


class ModelSettings(BaseModel):
    model_config = {"frozen": True}

    # A package default ("minilm", "smollm2", "use-multilingual"), a local path, or a hub id.
    embedder: str = "minilm"
    # Chinese and mixed chunks are also embedded by this multilingual model into a second
    # vector space that Chinese queries search (MiniLM is English-only); "none" turns it off.
    embedder_zh: str = "use-multilingual"
    generator: str = "smollm2"
    # The model that reads passages in rag.mode "read" (rag/reader_model.py):
    # "qwen2.5-0.5b" (Qwen2.5-Coder-0.5B-Instruct, from pinned packages, converted once to
    # CTranslate2 INT8), a CTranslate2 or transformers folder, a .gguf file, or a hub id.
    reader: str = "qwen2.5-0.5b"
    # Where models converted once are kept (the reader's CTranslate2 INT8 folder, a GGUF
    # generator's safetensors): a user-level cache, not the data dir, so `kinject demo`,
    # `kinject serve` and every data dir of the user share one conversion (the reader's
    # takes 1.5-2.5 minutes). Conversions are atomic and locked, so processes may share it.
    cache_dir: Path = Field(default_factory=default_models_cache_dir)
    # "auto" picks CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Threads of the process's compute pools: torch's intra- and inter-op pools (the
    # CTranslate2 INT8 generator takes torch's count), FAISS's OpenMP pool, the CTranslate2
    # reader and Whisper, and the multilingual USE embedder. Applied once where a process
    # starts (`kinject serve`, `kinject worker`, every CLI command). None (the default) leaves
    # each library's own default (about one thread per core): a machine of its own wants all
    # of them; 1 helps on a machine whose cores are busy with other work (each library's
    # threads spin-wait for each other there: a tiny forward pass took 40x as long).
    threads: int | None = Field(default=None, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # The serving generator in INT8. "ct2-int8": a CTranslate2 INT8 copy of the model, made
    # once in cache_dir (kinject/generator_ct2.py); an adapter version is merged into the base
    # and converted once too, in the background, the torch fp32 model answering with it
    # meanwhile. "int8": torch's dynamic INT8 linear layers (CPU only). "none": fp32 (bf16 on
    # a GPU). "auto": ct2-int8 on the CPU, none on a GPU (CTranslate2 on a GPU is unmeasured).
    # Training never uses these models. Default auto, by measurement (bench/int8.py --quick
    # --threads 1 --questions 4 --free-only, 2 busy cores, SmolLM2-135M): ct2-int8 writes 5.1x
    # fp32's tokens/s (3.6 -> 18.5) in 0.68x the memory (796 -> 544 MB), answers right 0.143
    # -> 0.125 on 56 RAG test questions (-1.8 points: one question; answer holds the value
    # 0.59 -> 0.64). Torch int8: 1.8x the tokens/s but 14.3 points fewer right answers.
    quantize: Literal["auto", "none", "int8", "ct2-int8"] = "auto"
    # The CLIP image index. clip_model: an open_clip architecture name ("ViT-B-32") or a model
    # config .json (a custom architecture, named by the file's stem). clip_checkpoint: a local
    # checkpoint file, an open_clip folder (open_clip_config.json + weights), "hf-hub:org/repo"
    # or a pretrained tag ("openai"; these two need the internet). None turns the index off.
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str | None = None
    # Speech to text for kind "audio" (ingest/whisper_model.py): "base" (Whisper base,
    # multilingual: English and Chinese, from pinned packages, assembled once under the
    # models dir), "tiny.en" (English only, ~3.5x faster), a CTranslate2 folder or a hub id.
    whisper: str = "base"


