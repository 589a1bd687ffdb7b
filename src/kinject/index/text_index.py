"""The text index: docstore (durable truth) + vector spaces in FAISS + BM25 + the embedders.

``apply`` writes a batch of source updates and the Kafka offsets they came from in one
SQLite transaction, then mirrors them into every search structure under one lock, so a
search sees the old version of a source or the new one, never half. ``open`` loads the
snapshots and reconciles them with the docstore (rows missing are added, rows gone are
removed; an unreadable snapshot is rebuilt from the stored vectors), so a crash at any
moment loses nothing.

Spaces: ``main`` holds every chunk, embedded by the main embedder (MiniLM by default);
``zh`` (optional) holds the Chinese and mixed chunks embedded by a multilingual embedder
(USE by default), because MiniLM is English-only. A query is routed by its language: a
Chinese one searches the ``zh`` space, an English one the ``main`` space; ``hybrid`` mode
fuses that list with BM25 (a convex combination of normalised scores, text_search.py).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kinject.errors import IndexFailure
from kinject.index import space_store
from kinject.index.ann_index import AnnConfig, AnnIndex
from kinject.index.bm25_index import Bm25Index
from kinject.index.bm25_tokens import tokenize
from kinject.index.changes import SourceUpdate
from kinject.index.docstore import Docstore
from kinject.index.embedders import Embedder
from kinject.index.text_config import SEARCH_MODES, ZH_LANGS, ZH_SPACE, TextIndexConfig
from kinject.index.text_search import TextIndexSearch, query_lang
from kinject.index.text_snapshots import TextIndexSnapshots
from kinject.index.visibility import ChunkVisibility, VisibilityChange
from kinject.types import Chunk

if TYPE_CHECKING:
    from kinject.config import Settings

__all__ = ["SEARCH_MODES", "ZH_LANGS", "ZH_SPACE", "TextIndex", "TextIndexConfig",
           "load_zh_embedder", "query_lang", "text_index_from_settings"]


def text_index_from_settings(settings: Settings) -> TextIndex:
    """The (unopened) TextIndex that ``settings`` describe: ``<data dir>/index``, the main
    embedder, the Chinese-route embedder unless ``models.embedder_zh`` is "none"."""
    from kinject.index.embedders import load_embedder

    m, ix = settings.models, settings.index
    embedder = load_embedder(m.embedder, threads=m.threads)
    zh = load_zh_embedder(settings)
    config = TextIndexConfig(
        ann=AnnConfig(hnsw_threshold=ix.hnsw_threshold, hnsw_m=ix.hnsw_m,
                      ef_construction=ix.hnsw_ef_construction, ef_search=ix.hnsw_ef_search),
        fusion=ix.fusion,
        vector_weight=ix.fusion_vector_weight,
        rrf_k=ix.rrf_k,
        near_duplicate_threshold=(settings.ingest.near_duplicate_threshold
                                  if settings.ingest.dedupe else None),
    )
    return TextIndex(settings.data_dir / "index", embedder, zh_embedder=zh, config=config)


def load_zh_embedder(settings: Settings) -> Embedder | None:
    """The Chinese-route embedder (``models.embedder_zh``), or None when it is "none", the
    main embedder itself (a multilingual main embedder needs no second space) or when the
    main one is the ``hash`` test embedder (it has no language to be weak in)."""
    from kinject.index.embedders import load_embedder

    spec = settings.models.embedder_zh.strip()
    main = settings.models.embedder.strip()
    if spec.lower() in ("", "none") or spec == main or main.startswith("hash"):
        return None
    return load_embedder(spec, threads=settings.models.threads)


class TextIndex(TextIndexSnapshots, TextIndexSearch):
    """Search chunks by meaning and by words. Thread-safe: searches run while batches are
    applied, and background rebuilds never block a search."""

    def __init__(self, directory: Path, embedder: Embedder, *,
                 zh_embedder: Embedder | None = None,
                 config: TextIndexConfig | None = None) -> None:
        self.directory = directory
        self.embedder = embedder
        self.zh_embedder = zh_embedder
        self.config = config or TextIndexConfig()
        self.docstore: Docstore | None = None
        self.faiss: AnnIndex | None = None  # the main space
        self.zh: AnnIndex | None = None
        self.bm25: Bm25Index | None = None
        self._write_lock = threading.Lock()
        # Which chunks search shows: duplicates and superseded conflicting rows are hidden.
        self.visibility = ChunkVisibility(self.config.near_duplicate_threshold)

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> TextIndex:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder.warm_up()
        if self.zh_embedder is not None:
            self.zh_embedder.warm_up()
        self.docstore = store = Docstore(self.directory / "docstore.sqlite")
        space_store.ensure_schema(store)
        with store.transaction() as db:
            if self.visibility.open(db):  # what is hidden changed: snapshots are stale
                store.bump_generation(db)
        self.faiss = self._open_space(None, self.embedder, self._snapshot_path)
        if self.zh_embedder is not None:
            self.zh = self._open_space(ZH_SPACE, self.zh_embedder,
                                       self.directory / "text-zh.faiss")
        self.bm25 = self._open_bm25()
        self._apply_visibility(VisibilityChange(hide=set(self.visibility.hidden)))
        return self

    def warm_up(self) -> None:
        """Run a query's path once: the BM25 tokenizer's tools (jieba's dictionary, the
        stemmer: seconds) and each embedder's first encode (its lazy imports and kernels)
        load on their first use, and the first search paid for them (19 s on a busy machine).
        Searches nothing: an empty or huge index costs the same."""
        tokenize("warm-up 预热")
        self.embedder.encode(["warm-up"])
        if self.zh_embedder is not None:
            self.zh_embedder.encode(["预热"])

    def close(self) -> None:
        if self.docstore is not None:
            for part in (self.faiss, self.zh, self.bm25):
                if part is not None:
                    part.wait()
            self.snapshot()
            self.docstore.close()
            self.docstore = None

    def __enter__(self) -> TextIndex:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _store(self) -> Docstore:
        if self.docstore is None:
            raise IndexFailure("the index is not open; call open() first")
        return self.docstore

    def _faiss(self) -> AnnIndex:
        if self.faiss is None:
            raise IndexFailure("the index is not open; call open() first")
        return self.faiss

    def _bm25(self) -> Bm25Index:
        if self.bm25 is None:
            raise IndexFailure("the index is not open; call open() first")
        return self.bm25

    # -- writes -------------------------------------------------------------------------------
    def _zh_vectors(self, update: SourceUpdate) -> tuple[list[int], np.ndarray]:
        """Positions and multilingual vectors of the update's Chinese/mixed chunks: from the
        event when its worker sent them, else embedded here."""
        zh_emb = self.zh_embedder
        if zh_emb is None or update.op != "upsert":
            return [], np.zeros((0, 0), np.float32)
        for extra in update.extra:
            if extra.space == ZH_SPACE and extra.embedder == zh_emb.name and (
                    len(extra.vectors) == 0 or extra.vectors.shape[1] == zh_emb.dim):
                return list(extra.positions), extra.vectors
        positions = [i for i, c in enumerate(update.chunks) if c.lang in ZH_LANGS]
        if not positions:
            return [], np.zeros((0, zh_emb.dim), np.float32)
        return positions, zh_emb.encode([update.chunks[i].text for i in positions])

    def apply(
        self, updates: Sequence[SourceUpdate], offsets: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Apply updates and record ``offsets`` ({(topic, partition): next offset}) atomically."""
        store, index, bm25 = self._store(), self._faiss(), self._bm25()
        # The slow parts (tokenising, embedding missing vectors) happen before the lock.
        tokens = [[tokenize(c.text) for c in u.chunks] if u.op == "upsert" else []
                  for u in updates]
        zh = [self._zh_vectors(u) for u in updates]
        removed: list[int] = []
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        added_tokens: list[list[str]] = []
        zh_ids: list[int] = []
        zh_vecs: list[np.ndarray] = []
        with self._write_lock:
            with store.transaction() as db:
                for u, toks, (zpos, zvecs) in zip(updates, tokens, zh, strict=True):
                    keep = [c.chunk_id for c in u.chunks]
                    gone = store.remove_source_except(db, u.source_id, keep)
                    space_store.drop_rows(db, gone)
                    removed += gone
                    if u.op == "upsert" and u.chunks:
                        if u.vectors.shape[1] != index.dim:
                            raise IndexFailure(
                                f"update for {u.source_id} has {u.vectors.shape[1]}-d vectors, "
                                f"the index holds {index.dim}-d ones (embedder {u.embedder!r})"
                            )
                        rows = store.upsert_chunks(db, _stamped(u), u.vectors)
                        added_ids += rows
                        added_vecs.append(u.vectors)
                        added_tokens += toks
                        if zpos:
                            zrows = [rows[i] for i in zpos]
                            space_store.put_vectors(db, ZH_SPACE, zrows, zvecs)
                            zh_ids += zrows
                            zh_vecs.append(zvecs)
                    store.add_lineage(db, u.source_id, u.op, u.record_position,
                                      u.content_hash, keep)
                for (topic, partition), nxt in (offsets or {}).items():
                    store.set_offset(db, topic, partition, nxt)
                vis = self.visibility.settle(db, updates)
                store.bump_generation(db)
            # Still under the lock: a search sees the old version or the new one, never
            # a source that is half removed.
            index.remove(removed)
            bm25.remove(removed)
            if added_ids:
                index.upsert(added_ids, np.concatenate(added_vecs))
                bm25.add(added_ids, tokens=added_tokens)
            if self.zh is not None:
                self.zh.remove(removed)
                if zh_ids:
                    self.zh.upsert(zh_ids, np.concatenate(zh_vecs))
            self._apply_visibility(vis)

    def _apply_visibility(self, change: VisibilityChange) -> None:
        """Keep hidden chunks (duplicates, superseded rows) out of every search structure and
        put back the ones that are visible again. Call under the write lock (or in open)."""
        hide = sorted(change.hide)
        for part in (self.faiss, self.zh, self.bm25):
            if part is not None and hide:
                part.remove(hide)
        if change.show:
            store = self._store()
            self._faiss().upsert(change.show, change.show_vectors)
            self._bm25().add(*space_store.texts(store, change.show))
            if self.zh is not None:
                ids, vecs = space_store.vectors_for(store, ZH_SPACE, change.show)
                if len(ids):
                    self.zh.upsert(ids, vecs)
        self.visibility.commit(change)

    # -- reads --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._faiss())

    def chunks_of(self, source_ids: Sequence[str]) -> list[Chunk]:
        """Every stored chunk of these sources (searchable or hidden), source by source."""
        return self._store().chunks_by_sources(source_ids)

    def applied_offsets(self, topic: str) -> dict[int, int]:
        return self._store().offsets(topic)

    def source_cluster(self) -> str | None:
        """The Kafka cluster id the stored offsets belong to."""
        return self._store().state("kafka_cluster_id")

    def note(self, key: str) -> str | None:
        """A value the materialiser keeps beside its offsets (the docstore's state)."""
        return self._store().state(key)

    def set_note(self, key: str, value: str) -> None:
        store = self._store()
        with self._write_lock, store.transaction() as db:
            store.set_state(db, key, value)

    def reset_source(self, cluster_id: str, topic: str) -> None:
        """Forget the offsets of ``topic``: they belong to another (or a lost) log."""
        store = self._store()
        with self._write_lock, store.transaction() as db:
            store.clear_offsets(db, topic)
            store.set_state(db, "kafka_cluster_id", cluster_id)

def _stamped(update: SourceUpdate) -> tuple[Chunk, ...]:
    """The update's chunks with the record's time in ``meta["ts"]`` (for time filters)."""
    if update.ts is None:
        return update.chunks
    return tuple(c if "ts" in c.meta else dataclasses.replace(c, meta={**c.meta, "ts": update.ts})
                 for c in update.chunks)
