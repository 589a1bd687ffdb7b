"""The text index: docstore (durable truth) + FAISS (fast search) + the embedder.

``apply`` writes a batch of source updates and the Kafka offsets they came from in one
SQLite transaction, then mirrors them into FAISS. ``open`` loads the FAISS snapshot when it
matches the docstore's generation and otherwise rebuilds it from the stored vectors, so a
crash between the two writes loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kinject.errors import IndexFailure
from kinject.index.changes import SourceUpdate
from kinject.index.docstore import Docstore
from kinject.index.embedders import Embedder
from kinject.index.faiss_index import FaissIndex
from kinject.index.filters import SearchFilters
from kinject.types import Hit

log = logging.getLogger(__name__)

SEARCH_MODES = ("hybrid", "vector", "bm25")


class TextIndex:
    """Search chunks by meaning. Thread-safe: searches run while batches are applied."""

    def __init__(self, directory: Path, embedder: Embedder) -> None:
        self.directory = directory
        self.embedder = embedder
        self.docstore: Docstore | None = None
        self.faiss: FaissIndex | None = None
        self._write_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> TextIndex:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder.warm_up()
        self.docstore = Docstore(self.directory / "docstore.sqlite")
        self.faiss = self._load_or_rebuild()
        return self

    def close(self) -> None:
        if self.docstore is not None:
            self.snapshot()
            self.docstore.close()
            self.docstore = None

    def __enter__(self) -> TextIndex:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _snapshot_path(self) -> Path:
        return self.directory / "text.faiss"

    @property
    def _snapshot_meta(self) -> Path:
        return self.directory / "text.faiss.json"

    def _load_or_rebuild(self) -> FaissIndex:
        store = self._store()
        gen = store.generation()
        try:
            meta = json.loads(self._snapshot_meta.read_text())
            if meta.get("generation") == gen and meta.get("embedder") == self.embedder.name:
                index = FaissIndex.load(self._snapshot_path)
                log.info("loaded index snapshot: %d vectors (generation %d)", len(index), gen)
                return index
        except (OSError, ValueError, RuntimeError):
            pass
        ids, vecs = store.vectors()
        if len(ids) and vecs.shape[1] != self.embedder.dim:
            raise IndexFailure(
                f"the index in {self.directory} holds {vecs.shape[1]}-d vectors but the embedder "
                f"{self.embedder.name!r} makes {self.embedder.dim}-d ones; use the embedder it "
                "was built with or a new data directory"
            )
        index = FaissIndex(self.embedder.dim)
        index.upsert(ids, vecs)
        log.info("rebuilt FAISS from the docstore: %d vectors (generation %d)", len(ids), gen)
        return index

    def snapshot(self) -> None:
        """Save FAISS atomically with the docstore generation it reflects."""
        store, index = self._store(), self._faiss()
        with self._write_lock:
            gen = store.generation()
            index.save(self._snapshot_path)
            tmp = self._snapshot_meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({"generation": gen, "embedder": self.embedder.name}))
            os.replace(tmp, self._snapshot_meta)

    def _store(self) -> Docstore:
        if self.docstore is None:
            raise IndexFailure("the index is not open; call open() first")
        return self.docstore

    def _faiss(self) -> FaissIndex:
        if self.faiss is None:
            raise IndexFailure("the index is not open; call open() first")
        return self.faiss

    # -- writes -------------------------------------------------------------------------------
    def apply(
        self, updates: Sequence[SourceUpdate], offsets: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Apply updates and record ``offsets`` ({(topic, partition): next offset}) atomically."""
        store, index = self._store(), self._faiss()
        removed: list[int] = []
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        with self._write_lock:
            with store.transaction() as db:
                for u in updates:
                    keep = [c.chunk_id for c in u.chunks]
                    removed += store.remove_source_except(db, u.source_id, keep)
                    if u.op == "upsert" and u.chunks:
                        if u.vectors.shape[1] != index.dim:
                            raise IndexFailure(
                                f"update for {u.source_id} has {u.vectors.shape[1]}-d vectors, "
                                f"the index holds {index.dim}-d ones (embedder {u.embedder!r})"
                            )
                        rows = store.upsert_chunks(db, u.chunks, u.vectors)
                        added_ids += rows
                        added_vecs.append(u.vectors)
                    store.add_lineage(db, u.source_id, u.op, u.record_position,
                                      u.content_hash, keep)
                for (topic, partition), nxt in (offsets or {}).items():
                    store.set_offset(db, topic, partition, nxt)
                store.bump_generation(db)
            # Still under the lock: a search sees the old version or the new one, never
            # a source that is half removed.
            index.remove(removed)
            if added_ids:
                index.upsert(added_ids, np.concatenate(added_vecs))

    # -- reads --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._faiss())

    def applied_offsets(self, topic: str) -> dict[int, int]:
        return self._store().offsets(topic)

    def source_cluster(self) -> str | None:
        """The Kafka cluster id the stored offsets belong to."""
        return self._store().state("kafka_cluster_id")

    def reset_source(self, cluster_id: str, topic: str) -> None:
        """Forget the offsets of ``topic``: they belong to another (or a lost) log."""
        store = self._store()
        with self._write_lock, store.transaction() as db:
            store.clear_offsets(db, topic)
            store.set_state(db, "kafka_cluster_id", cluster_id)

    def search(
        self,
        query: str,
        k: int = 5,
        filters: SearchFilters | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query`` that pass ``filters``.

        ``mode``: ``hybrid`` (vector + BM25, reciprocal-rank fusion), ``vector`` or ``bm25``.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        vec = self.embedder.encode([query])
        if filters is None or filters.empty:
            return self.search_vector(vec[0], k)
        hits = self.search_vector(vec[0], max(4 * k, 50))
        return [h for h in hits if filters.matches(h)][:k]

    def search_vector(self, vector: np.ndarray, k: int) -> list[Hit]:
        with self._write_lock:  # FAISS and the docstore agree inside the lock
            scores, ids = self._faiss().search(vector[None, :], k)
            if ids.size == 0:
                return []
            chunks = self._store().chunks_by_rows([int(i) for i in ids[0] if i >= 0])
        hits = []
        for score, row in zip(scores[0], ids[0], strict=True):
            chunk = chunks.get(int(row))
            if chunk is not None:  # deleted between search and lookup
                hits.append(
                    Hit(
                        chunk_id=chunk.chunk_id,
                        source_id=chunk.source_id,
                        text=chunk.text,
                        score=float(score),
                        meta={**chunk.meta, "lang": chunk.lang, "kind": chunk.kind},
                    )
                )
        return hits
