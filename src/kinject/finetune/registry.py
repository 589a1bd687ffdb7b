"""AdapterRegistry: immutable, content-addressed LoRA adapter versions and the ACTIVE pointer.

Layout under ``<data_dir>/adapters``::

    versions/<sha256 of adapter_model.safetensors>/
        adapter_model.safetensors   the weights (never pickled)
        adapter_config.json         PEFT's config
        manifest.json               base model hash, parent, corpus manifest, lineage, training
                                    config, metrics, created_at, status, gate report
        ewc_state.safetensors       (optional) the online-EWC state to carry into the next cycle
    ACTIVE                          the serving version (a line of JSON), written by temp + rename
    history.jsonl                   every change of ACTIVE, for rollback and audit
    ID                              a random id of this registry, named in promotion events:
                                    replicas sharing the folder share it (finetune/serving.py)
    .lock                           serialises read-modify-write of manifests and the pointer

Weights never change once written; only a manifest's ``status`` and ``report`` do (rewritten
atomically). A version's lineage holds its own training sources and its parent's lineage, so a
deleted source taints every adapter that learned from it, directly or by inheritance.

When the ACTIVE version becomes tainted, the registry moves ACTIVE at once to the newest
untainted ancestor that was promoted (or to the base model: no adapter), records that in the
history with reason ``tainted``, and returns the change so the caller can announce it on
``kinject.adapters``. Serving replicas follow the pointer, so a deleted fact stops being
served from the weights before the next cycle has even run.
"""

from __future__ import annotations

import builtins
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from kinject.errors import NotFound
from kinject.finetune.active_pointer import Activation, ActivePointer
from kinject.finetune.adapter_manifest import (
    _COPIED,
    CONFIG,
    EWC_STATE,
    MANIFEST,
    MANIFEST_FORMAT,
    WEIGHTS,
    RegistryError,
    _dump,
    _load,
    _write_atomic,
    file_sha256,
    fsync_dir,
    fsync_folder,
)
from kinject.types import AdapterVersion

# A version's files (adapter_manifest.py) and the ACTIVE pointer (active_pointer.py) live
# beside this module; their names stay importable from here.
__all__ = [
    "CONFIG", "EWC_STATE", "MANIFEST", "MANIFEST_FORMAT", "WEIGHTS", "Activation",
    "AdapterRegistry", "RegistryError", "file_sha256",
]

log = logging.getLogger(__name__)


class AdapterRegistry(ActivePointer):
    """The adapters of one data directory. Cheap to construct; safe across processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.pointer = self.root / "ACTIVE"
        self.history_file = self.root / "history.jsonl"
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> AdapterRegistry:
        return cls(Path(data_dir) / "adapters")

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released by the OS if this process dies
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- adding ----------------------------------------------------------------------------
    def add(
        self,
        adapter_dir: Path,
        *,
        base_model: str,
        base_model_hash: str = "",
        parent: str | None = None,
        corpus_manifest: str = "",
        lineage: Iterable[str] = (),
        corpus_cycle: int = 0,
        train_config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        ewc_state: Path | None = None,
    ) -> AdapterVersion:
        """Copy a PEFT adapter folder in as a candidate version named by its weights' hash.

        The lineage stored is ``lineage`` plus the parent's lineage; ``ewc_state`` (a
        safetensors file) is kept beside the weights for the next cycle. Adding the same
        weights twice returns the existing version unchanged.
        """
        src = Path(adapter_dir)
        for name in (WEIGHTS, CONFIG):
            if not (src / name).is_file():
                raise RegistryError(f"{src} has no {name}: not a PEFT adapter folder")
        version = file_sha256(src / WEIGHTS)
        target = self.versions_dir / version
        if (target / MANIFEST).is_file():
            log.info("adapter %s is registered already", version[:12])
            return self.get(version)
        parent_lineage: tuple[str, ...] = ()
        if parent is not None:
            parent = self.get(parent).version
            parent_lineage = self.get(parent).lineage
        meta = AdapterVersion(
            version=version,
            base_model=base_model,
            parent=parent,
            created_at=time.time(),
            status="candidate",
            metrics=dict(metrics or {}),
            base_model_hash=base_model_hash,
            corpus_manifest=corpus_manifest,
            lineage=tuple(sorted(set(lineage) | set(parent_lineage))),
            corpus_cycle=corpus_cycle,
            train_config=dict(train_config or {}),
        )
        tmp = self.versions_dir / f".{version}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        try:
            for name in _COPIED:
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)
            if ewc_state is not None and Path(ewc_state).is_file():
                shutil.copy2(ewc_state, tmp / EWC_STATE)
            if file_sha256(tmp / WEIGHTS) != version:
                raise RegistryError(f"{src / WEIGHTS} changed while it was being registered")
            (tmp / MANIFEST).write_text(_dump(meta), encoding="utf-8")
            fsync_folder(tmp)
            try:
                os.replace(tmp, target)
            except OSError:  # another process registered the same weights first
                if not (target / MANIFEST).is_file():
                    raise
            fsync_dir(self.versions_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("registered adapter %s (parent %s, %d source(s))", version[:12],
                 parent[:12] if parent else "base", len(meta.lineage))
        return meta

    def install(self, folder: Path) -> str:
        """Move a version folder made elsewhere (a fetched archive, unpacked inside
        ``versions/`` under a dot name) in as the version its weights hash to, atomically.
        The manifest must name that version; a version already here is kept as it is."""
        folder = Path(folder)
        version = file_sha256(folder / WEIGHTS)
        meta = _load(folder / MANIFEST)
        if meta.version != version:
            raise RegistryError(f"manifest names version {meta.version[:12]!r} but the "
                                f"weights hash to {version[:12]}")
        target = self.versions_dir / version
        fsync_folder(folder)
        try:
            os.replace(folder, target)
        except OSError:  # a non-empty folder of that name: the version is here already
            if not (target / MANIFEST).is_file():
                raise
            shutil.rmtree(folder, ignore_errors=True)
        fsync_dir(self.versions_dir)
        log.info("installed adapter %s", version[:12])
        return version

    def identity(self) -> str:
        """This registry's random id, made on first use (replicas on one shared folder read
        the same id; a registry on another disk has its own)."""
        path = self.root / "ID"
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        tmp = self.root / f".ID.{uuid.uuid4().hex}.tmp"
        tmp.write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text(encoding="utf-8").strip()

    # -- reading ---------------------------------------------------------------------------
    def names(self) -> builtins.list[str]:
        """The registry's own version names: the folders under ``versions/`` that hold a
        manifest (temporary folders of a registration in progress start with a dot)."""
        return [p.name for p in self.versions_dir.iterdir()
                if not p.name.startswith(".") and (p / MANIFEST).is_file()]

    def resolve(self, ref: str) -> str:
        """A full version id from an id or a unique prefix (at least 6 characters).

        ``ref`` is only ever compared with the registry's own version names, never joined
        into a path: a client's ``../../x`` or ``/abs/path`` is an unknown version."""
        ref = ref.strip().lower()
        names = self.names() if ref else []
        if ref in names:
            return ref
        if len(ref) >= 6:
            found = [name for name in names if name.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise RegistryError(f"adapter version prefix {ref!r} is ambiguous: "
                                    f"{', '.join(v[:12] for v in found)}")
        # the reference is a client's text: name it (repr, cut short), not the data dir
        raise NotFound(f"no adapter version {ref[:80]!r}")

    def get(self, ref: str) -> AdapterVersion:
        version = self.resolve(ref)
        return _load(self.versions_dir / version / MANIFEST)

    def path(self, ref: str) -> Path:
        return self.versions_dir / self.resolve(ref)

    def list(self) -> builtins.list[AdapterVersion]:
        """All versions, oldest first (the same as :meth:`versions`)."""
        return self.versions()

    def versions(self) -> builtins.list[AdapterVersion]:
        """All versions, oldest first."""
        out = [_load(p / MANIFEST) for p in self.versions_dir.iterdir()
               if not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return sorted(out, key=lambda v: (v.created_at, v.version))

    def ancestors(self, ref: str) -> builtins.list[AdapterVersion]:
        """The version and its parents, newest first; the chain ends at a parent this
        registry does not hold (a version fetched from another registry comes alone)."""
        chain, seen, held = [], set(), set(self.names())
        current: str | None = self.resolve(ref)
        while current is not None and current not in seen and current in held:
            seen.add(current)
            v = self.get(current)
            chain.append(v)
            current = v.parent
        return chain

    def newest_untainted_ancestor(self, ref: str | None) -> AdapterVersion | None:
        """The version itself when untainted, else its nearest untainted parent; None: base."""
        if ref is None:
            return None
        for v in self.ancestors(ref):
            if v.status != "tainted":
                return v
        return None
    # -- changing --------------------------------------------------------------------------
    def set_status(self, ref: str, status: str, report: dict[str, Any] | None = None,
                   metrics: dict[str, float] | None = None) -> AdapterVersion:
        with self._locked():
            return self._set_status(ref, status, report, metrics)

    def _set_status(self, ref: str, status: str, report: dict[str, Any] | None = None,
                    metrics: dict[str, float] | None = None) -> AdapterVersion:
        path = self.versions_dir / self.resolve(ref) / MANIFEST
        current = _load(path)
        if current.status == "tainted" and status != "tainted":
            raise RegistryError(f"adapter {current.version[:12]} is tainted (trained on deleted "
                                "data); its status cannot change")
        updated = replace(
            current,
            status=status,  # type: ignore[arg-type]
            report=report if report is not None else current.report,
            metrics={**current.metrics, **(metrics or {})},
        )
        _write_atomic(path, _dump(updated))
        return updated
    def taint_source(self, source_id: str) -> tuple[builtins.list[str], Activation | None]:
        """Mark every version whose lineage holds ``source_id`` as tainted.

        Returns the versions newly tainted and, when the ACTIVE one was among them, the
        change of ACTIVE to its newest untainted promoted ancestor (or the base model).
        """
        return self.taint_sources([source_id])

    def taint_sources(self, source_ids: Iterable[str]
                      ) -> tuple[builtins.list[str], Activation | None]:
        wanted = set(source_ids)
        if not wanted:
            return [], None
        with self._locked():
            hits = [v for v in self.versions()
                    if v.status != "tainted" and wanted & set(v.lineage)]
            tainted = [v.version for v in hits]
            # ACTIVE moves first: a reader without the lock never sees a tainted version active
            change = None
            active = self.active()
            if active is not None and active in tainted:
                fallback = next((a for a in self.ancestors(active)
                                 if a.status == "promoted" and a.version not in tainted), None)
                change = self._activate(fallback.version if fallback else None, "tainted")
            for v in hits:
                hit = sorted(wanted & set(v.lineage))
                report = {**v.report, "tainted_by": hit, "tainted_at": time.time()}
                self._set_status(v.version, "tainted", report)
        if tainted:
            log.warning("tainted %d adapter version(s) trained on deleted source(s) %s",
                        len(tainted), ", ".join(sorted(wanted)))
        return tainted, change

    def taint_missing(self, present: set[str]) -> tuple[builtins.list[str], Activation | None]:
        """Taint versions whose lineage names a source the corpus no longer holds."""
        gone = {s for v in self.versions() if v.status != "tainted" for s in v.lineage} - present
        return self.taint_sources(gone)
