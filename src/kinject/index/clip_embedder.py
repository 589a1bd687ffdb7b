"""CLIP embeddings for images and texts (open_clip), resolved from two settings.

``KINJECT_MODELS__CLIP_MODEL`` names the architecture: an open_clip name (``ViT-B-32``), or
the path of a model config JSON (open_clip's format: ``embed_dim``, ``vision_cfg``,
``text_cfg``) for a custom architecture. ``KINJECT_MODELS__CLIP_CHECKPOINT`` names the
weights: a local checkpoint file (``.pt``, ``.bin``, ``.safetensors``), a local folder holding
``open_clip_config.json`` and weights (a downloaded hub repository), ``hf-hub:org/repo``, or a
pretrained tag of the architecture such as ``openai`` (the last two need the internet). No
checkpoint turns the image index off; images then stay searchable through the text chunks of
their captions and OCR text.

Constructors are cheap; ``warm_up()`` loads the model. Every vector is float32, unit length.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.errors import DependencyMissing, ModelNotFound
from kinject.index.embedders import l2_normalise, resolve_device

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

MODEL_SETTING = "KINJECT_MODELS__CLIP_MODEL"
CHECKPOINT_SETTING = "KINJECT_MODELS__CLIP_CHECKPOINT"
HF_HUB = "hf-hub:"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
_REGISTER_LOCK = threading.Lock()


@dataclass(frozen=True)
class ClipSource:
    """What open_clip is asked for: ``create_model_and_transforms(model_name, pretrained)``."""

    model_name: str
    pretrained: str | None
    name: str  # stable, human-readable identity of the model (architecture + weights)
    local: bool  # False when loading needs the internet (a hub id or a pretrained tag)


def _open_clip() -> Any:
    try:
        from kinject.hf import transformers_ready

        transformers_ready()  # sentence-transformers and open_clip import it too
        import open_clip
    except ImportError as exc:
        raise DependencyMissing(
            "the CLIP image index needs open_clip: pip install 'kinject[clip]'"
        ) from exc
    return open_clip


def _register_config(path: Path) -> str:
    """Register a model config JSON with open_clip; its file stem becomes the arch name."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{MODEL_SETTING}={str(path)!r} is not a readable JSON file: {exc}"
                            ) from exc
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ModelNotFound(
            f"{MODEL_SETTING}={str(path)!r} is not an open_clip model config "
            f"(missing {', '.join(missing)})"
        )
    open_clip = _open_clip()
    with _REGISTER_LOCK:
        if path.stem not in open_clip.list_models():
            open_clip.add_model_config(path)
    return path.stem


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith((".", "~", "/")) or "\\" in spec or "/" in spec
            or spec.endswith(_WEIGHT_SUFFIXES))


def resolve_clip(model: str, checkpoint: str | None) -> ClipSource | None:
    """Turn the two CLIP settings into a loadable source; None when no checkpoint is set.

    Raises ModelNotFound naming the setting that resolves to nothing.
    """
    ckpt = (checkpoint or "").strip()
    if not ckpt:
        return None
    model = model.strip()
    if ckpt.startswith(HF_HUB):  # the hub repository carries its own config
        return ClipSource(ckpt, None, ckpt, local=False)
    path = Path(ckpt).expanduser()
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise ModelNotFound(
                f"{CHECKPOINT_SETTING}={ckpt!r} is a folder without open_clip_config.json; "
                "point it at a checkpoint file or an open_clip model folder"
            )
        return ClipSource(f"local-dir:{path.resolve()}", None, f"local-dir:{path.name}",
                          local=True)
    arch = _resolve_arch(model)
    if path.is_file():
        return ClipSource(arch, str(path.resolve()), f"{arch}:{path.name}", local=True)
    if _looks_like_path(ckpt):
        raise ModelNotFound(f"{CHECKPOINT_SETTING}={ckpt!r}: no such checkpoint file")
    tags = _open_clip().list_pretrained_tags_by_model(arch)
    if ckpt not in tags:
        raise ModelNotFound(
            f"{CHECKPOINT_SETTING}={ckpt!r} is neither a local file nor a pretrained tag of "
            f"{arch} (tags: {', '.join(tags) or 'none'}); set it to a checkpoint file"
        )
    return ClipSource(arch, ckpt, f"{arch}:{ckpt}", local=False)


def _resolve_arch(model: str) -> str:
    if not model:
        raise ModelNotFound(f"{MODEL_SETTING} is empty; use an open_clip architecture name "
                            "such as ViT-B-32 or a model config JSON file")
    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"{MODEL_SETTING}={model!r}: no such model config file")
        return _register_config(path)
    known = _open_clip().list_models()
    if model not in known:
        raise ModelNotFound(
            f"{MODEL_SETTING}={model!r} is not an open_clip architecture (e.g. "
            f"{', '.join(known[:3])}, ...) nor a model config .json file"
        )
    return model


class ClipEmbedder:
    """Images and texts into one space. ``encode_images`` takes PIL images or encoded bytes."""

    def __init__(self, model: str, checkpoint: str, *, device: str = "cpu") -> None:
        if not checkpoint or not checkpoint.strip():
            raise ValueError(f"ClipEmbedder needs a checkpoint ({CHECKPOINT_SETTING}), got "
                             f"{checkpoint!r}")
        self.model_spec = model
        self.checkpoint = checkpoint
        self.device = device
        self._source: ClipSource | None = None
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None
        self._dim = 0
        self._device = "cpu"
        self._lock = threading.Lock()

    @property
    def source(self) -> ClipSource:
        if self._source is None:
            source = resolve_clip(self.model_spec, self.checkpoint)
            assert source is not None  # the constructor refused an empty checkpoint
            self._source = source
        return self._source

    @property
    def name(self) -> str:
        return f"clip:{self.source.name}"

    @property
    def dim(self) -> int:
        self.warm_up()
        return self._dim

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch

            open_clip = _open_clip()
            src = self.source
            device = resolve_device(self.device)
            log.info("loading CLIP %s on %s", src.name, device)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    src.model_name, pretrained=src.pretrained, device=device)
                tokenizer = open_clip.get_tokenizer(src.model_name)
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                where = "" if src.local else " (a hub id or tag needs the internet)"
                raise ModelNotFound(
                    f"cannot load CLIP {CHECKPOINT_SETTING}={self.checkpoint!r} with "
                    f"{MODEL_SETTING}={self.model_spec!r}{where}: {exc}"
                ) from exc
            model.eval()
            with torch.inference_mode():
                probe = model.encode_text(tokenizer(["probe"]).to(device))
            self._dim = int(probe.shape[-1])
            self._model, self._preprocess, self._tokenizer = model, preprocess, tokenizer
            self._device = device

    def encode_images(self, images: Sequence[Image | bytes], *, batch_size: int = 32
                      ) -> np.ndarray:
        """Unit-length float32 rows, one per image. Bytes are decoded with Pillow."""
        import torch

        self.warm_up()
        items = list(images)
        if not items:
            return np.zeros((0, self._dim), np.float32)
        out = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self._preprocess(_as_rgb(i))
                                 for i in items[start:start + batch_size]])
            with torch.inference_mode():
                out.append(self._model.encode_image(batch.to(self._device)).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 rows, one per text, in the images' space."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts() takes a sequence of texts, not a single str")
        self.warm_up()
        items = list(texts)
        if not items:
            return np.zeros((0, self._dim), np.float32)
        out = []
        for start in range(0, len(items), batch_size):
            tokens = self._tokenizer(items[start:start + batch_size]).to(self._device)
            with torch.inference_mode():
                out.append(self._model.encode_text(tokens).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def __repr__(self) -> str:
        return f"ClipEmbedder({self.model_spec!r}, {self.checkpoint!r}, device={self.device!r})"


def _as_rgb(image: Image | bytes) -> Image:
    if isinstance(image, bytes | bytearray):
        from PIL import Image as PILImage

        opened = PILImage.open(io.BytesIO(image))
        opened.load()
        return opened.convert("RGB")
    return image.convert("RGB")


def make_clip_embedder(model: str, checkpoint: str | None, *, device: str = "cpu"
                       ) -> ClipEmbedder | None:
    """The CLIP embedder the settings name (not loaded), or None when the image index is off.

    Resolves the settings now, so a checkpoint that names nothing fails here with
    ModelNotFound naming the setting, not at the first image.
    """
    if not (checkpoint or "").strip():
        return None
    assert checkpoint is not None
    embedder = ClipEmbedder(model, checkpoint, device=device)
    _ = embedder.source
    return embedder


@functools.lru_cache(maxsize=4)
def load_clip_embedder(model: str, checkpoint: str, device: str = "cpu") -> ClipEmbedder:
    """A warmed-up ClipEmbedder, loaded once per (model, checkpoint, device) in a process."""
    embedder = ClipEmbedder(model, checkpoint, device=device)
    embedder.warm_up()
    return embedder
