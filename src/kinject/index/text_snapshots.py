"""The text index's snapshots: opening each search structure from its file (reconciled with
the docstore) or rebuilding it from the stored vectors and texts, and saving them again.
A mixin of :class:`~kinject.index.text_index.TextIndex`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.errors import IndexFailure
from kinject.index import space_store
from kinject.index.ann_index import AnnIndex
from kinject.index.bm25_index import Bm25Index
from kinject.index.embedders import Embedder
from kinject.index.text_config import TextIndexConfig

if TYPE_CHECKING:
    from kinject.index.docstore import Docstore

log = logging.getLogger(__name__)


class TextIndexSnapshots:
    """Open and save the search structures of a TextIndex (state and accessors are its)."""

    directory: Path
    embedder: Embedder
    zh_embedder: Embedder | None
    config: TextIndexConfig
    zh: AnnIndex | None
    bm25: Bm25Index | None
    _write_lock: threading.Lock

    if TYPE_CHECKING:
        def _store(self) -> Docstore: ...
        def _faiss(self) -> AnnIndex: ...

    @property
    def _snapshot_path(self) -> Path:
        return self.directory / "text.faiss"

    def _loader(self, space: str | None) -> Any:
        def load() -> tuple[np.ndarray, np.ndarray]:
            store = self._store()
            return store.vectors() if space is None else space_store.space_vectors(store, space)
        return load

    def _open_space(self, space: str | None, embedder: Embedder, path: Path) -> AnnIndex:
        store = self._store()
        gen = store.generation()
        index = AnnIndex(embedder.dim, self.config.ann, loader=self._loader(space))
        meta = index.read_meta(path)
        if meta is not None and meta.get("embedder") == embedder.name and index.load(path):
            if meta.get("generation") != gen:
                self._reconcile_space(index, space)
            log.info("loaded the %s vector index: %d vectors (%s)", space or "main", len(index),
                     index.kind)
            return index
        ids, vecs = self._loader(space)()
        if len(ids) and vecs.shape[1] != embedder.dim:
            raise IndexFailure(
                f"the index in {self.directory} holds {vecs.shape[1]}-d vectors but the embedder "
                f"{embedder.name!r} makes {embedder.dim}-d ones; use the embedder it "
                "was built with or a new data directory"
            )
        index.reset(ids, vecs)
        log.info("rebuilt the %s vector index from the docstore: %d vectors (generation %d)",
                 space or "main", len(ids), gen)
        return index

    def _reconcile_space(self, index: AnnIndex, space: str | None) -> None:
        store = self._store()
        if space is None:
            want = {int(r) for r in space_store.row_ids(store).tolist()}
        else:
            want = {int(r) for r in space_store.space_vectors(store, space)[0].tolist()}
        have = index.ids()
        index.remove(np.asarray(sorted(have - want), dtype=np.int64))
        missing = sorted(want - have)
        if missing:
            ids, vecs = space_store.vectors_for(store, space, missing)
            index.upsert(ids, vecs)

    def _open_bm25(self) -> Bm25Index:
        store = self._store()
        bm25 = Bm25Index(rebuild_min=self.config.bm25_rebuild_min)
        folder = self.directory / "bm25"
        if bm25.load(folder):
            want = {int(r) for r in space_store.row_ids(store).tolist()}
            have = {int(r) for r in bm25.base_rows().tolist()}
            bm25.remove(sorted(have - want))
            missing = sorted(want - have)
            if missing:
                bm25.add(*space_store.texts(store, missing))
        else:
            bm25.reset(*space_store.texts(store))
        bm25.set_loader(lambda: space_store.texts(self._store()))
        return bm25

    def snapshot(self) -> None:
        """Save every search structure with the docstore generation it reflects; each file is
        written to a temp path and renamed, so a crash leaves the previous or the new one."""
        store, main = self._store(), self._faiss()
        with self._write_lock:  # nothing changes while the copies are taken
            gen = store.generation()
            frozen = [(self._snapshot_path, main.freeze({"generation": gen,
                                                        "embedder": self.embedder.name}))]
            if self.zh is not None and self.zh_embedder is not None:
                frozen.append((self.directory / "text-zh.faiss",
                               self.zh.freeze({"generation": gen,
                                               "embedder": self.zh_embedder.name})))
        for path, copy in frozen:
            AnnIndex.write(path, copy)
        if self.bm25 is not None:
            self.bm25.save(self.directory / "bm25", gen)
