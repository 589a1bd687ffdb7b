"""One adapter version's folder on disk: the names of its files, its manifest (the
:class:`~kinject.types.AdapterVersion` as JSON, written atomically), the hash that names it,
and the error a folder or a change the registry refuses raises (:class:`RegistryError`)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path

from kinject.errors import KinjectError
from kinject.types import AdapterVersion

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
EWC_STATE = "ewc_state.safetensors"
_COPIED = (WEIGHTS, CONFIG, EWC_STATE)
MANIFEST_FORMAT = 1


class RegistryError(KinjectError):
    """An adapter cannot be registered or activated (bad folder, tainted version, ...)."""

    code = "registry_error"


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's files and its entries to disk, so a rename that publishes it never
    names empty files after a power cut (the ACTIVE pointer is fsynced and may name it)."""
    for path in sorted(folder.iterdir()):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(v: AdapterVersion) -> str:
    d = asdict(v)
    d["lineage"] = list(v.lineage)
    d["format"] = MANIFEST_FORMAT
    return json.dumps(d, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n"


def _load(path: Path) -> AdapterVersion:
    d = json.loads(path.read_text(encoding="utf-8"))
    d.pop("format", None)
    d["lineage"] = tuple(d.get("lineage") or ())
    known = set(AdapterVersion.__dataclass_fields__)
    return AdapterVersion(**{k: v for k, v in d.items() if k in known})
