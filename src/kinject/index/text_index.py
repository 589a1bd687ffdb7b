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
fuses that list with BM25 by reciprocal rank (k=60).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.errors import IndexFailure
from kinject.index import space_store
from kinject.index.ann_index import AnnConfig, AnnIndex
from kinject.index.bm25_index import Bm25Index, tokenize
from kinject.index.changes import SourceUpdate
from kinject.index.docstore import Docstore
from kinject.index.embedders import Embedder
from kinject.index.filters import SearchFilters
from kinject.index.visibility import ChunkVisibility, VisibilityChange
from kinject.types import Chunk, Hit

if TYPE_CHECKING:
    from kinject.config import Settings

log = logging.getLogger(__name__)

SEARCH_MODES = ("hybrid", "vector", "bm25")
ZH_SPACE = "zh"
ZH_LANGS = ("zh", "mixed")


@dataclass(frozen=True)
class TextIndexConfig:
    """How the text index searches. ``zh_for_english``: also search the multilingual space
    for English queries (off: no gain measured by bench/search.py, at the USE cost)."""

    ann: AnnConfig = field(default_factory=AnnConfig)
    rrf_k: int = 60
    # Candidates fetched per retriever: max(overfetch * k, min_candidates).
    overfetch: int = 4
    min_candidates: int = 50
    bm25_rebuild_min: int = 256
    zh_for_english: bool = False
    # Near/exact duplicates of another source's chunk are kept but not searched
    # (index/visibility.py); None turns that off.
    near_duplicate_threshold: float | None = 0.9

    def __post_init__(self) -> None:
        if self.rrf_k < 1:
            raise ValueError(f"rrf_k must be >= 1, got {self.rrf_k}")
        if self.overfetch < 1 or self.min_candidates < 1:
            raise ValueError(f"overfetch and min_candidates must be >= 1, got "
                             f"{self.overfetch}, {self.min_candidates}")


def text_index_from_settings(settings: Settings) -> TextIndex:
    """The (unopened) TextIndex that ``settings`` describe: ``<data dir>/index``, the main
    embedder, the Chinese-route embedder unless ``models.embedder_zh`` is "none"."""
    from kinject.index.embedders import load_embedder

    m, ix = settings.models, settings.index
    embedder = load_embedder(m.embedder)
    zh = load_zh_embedder(settings)
    config = TextIndexConfig(
        ann=AnnConfig(hnsw_threshold=ix.hnsw_threshold, hnsw_m=ix.hnsw_m,
                      ef_construction=ix.hnsw_ef_construction, ef_search=ix.hnsw_ef_search),
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
    return load_embedder(spec)


def query_lang(text: str) -> str:
    from kinject.ingest.normalise import detect_lang

    return str(detect_lang(text))


class TextIndex:
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
        A Chinese (or mixed) query searches the multilingual space when there is one.
        ``Hit.score`` is the cosine similarity in the space searched (``vector`` and
        ``hybrid``: comparable across queries, usable as a relevance threshold) or the BM25
        score (``bm25``); ``Hit.meta`` adds ``rrf``, ``vector_score``, ``bm25_score`` and
        ``space``; hybrid hits are ordered by ``rrf``.
        """
        return self.search_many([query], k, filters, mode)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 5,
        filters: SearchFilters | None = None,
        mode: str = "hybrid",
    ) -> list[list[Hit]]:
        """:meth:`search` for several queries at once: their embeddings are computed in one
        call per embedder (what dynamic batching of concurrent questions needs)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        if filters is not None and not isinstance(filters, SearchFilters):
            raise TypeError(f"filters must be SearchFilters or None, got {type(filters)}")
        routed = self._route_many(queries) if mode != "bm25" else [[] for _ in queries]
        return [self._search_one(q, r, k, filters, mode)
                for q, r in zip(queries, routed, strict=True)]

    def _search_one(self, query: str, queries: list[tuple[AnnIndex, np.ndarray, str]], k: int,
                    filters: SearchFilters | None, mode: str) -> list[Hit]:
        flt = None if filters is None or filters.empty else filters
        hits = self._search(query, queries, k, flt, mode, allowed=None)
        if flt is not None and len(hits) < k:
            # Few candidates passed: search exactly among the chunks that pass.
            allowed = space_store.matching_rows(self._store(), flt)
            if allowed:
                hits = self._search(query, queries, k, flt, mode, allowed=allowed)
        return hits

    def _route_many(self, queries: Sequence[str]) -> list[list[tuple[AnnIndex, np.ndarray, str]]]:
        """Per query, the (space, query vector, name) pairs to search for its language; one
        encode call per embedder for all of them."""
        plans: list[tuple[bool, bool]] = []
        for query in queries:
            lang = query_lang(query)
            use_zh = (self.zh is not None and self.zh_embedder is not None and len(self.zh) > 0
                      and (lang in ZH_LANGS or self.config.zh_for_english))
            plans.append((use_zh, lang != "zh" or not use_zh))
        zh_texts = [q for q, (z, _) in zip(queries, plans, strict=True) if z]
        main_texts = [q for q, (_, m) in zip(queries, plans, strict=True) if m]
        zh_vecs = iter(self.zh_embedder.encode(zh_texts)) if zh_texts and self.zh_embedder \
            else iter(())
        main_vecs = iter(self.embedder.encode(main_texts)) if main_texts else iter(())
        out: list[list[tuple[AnnIndex, np.ndarray, str]]] = []
        for use_zh, use_main in plans:
            routed: list[tuple[AnnIndex, np.ndarray, str]] = []
            if use_zh:
                assert self.zh is not None
                routed.append((self.zh, next(zh_vecs), ZH_SPACE))
            if use_main:
                routed.append((self._faiss(), next(main_vecs), "main"))
            out.append(routed)
        return out

    def _search(self, query: str, queries: list[tuple[AnnIndex, np.ndarray, str]], k: int,
                flt: SearchFilters | None, mode: str, allowed: list[int] | None) -> list[Hit]:
        wide = flt is not None or mode == "hybrid"
        n = max(self.config.overfetch * k, self.config.min_candidates) if wide else k
        lists: list[list[tuple[int, float]]] = []
        cosine: dict[int, tuple[float, str]] = {}
        bm25_scores: dict[int, float] = {}
        with self._write_lock:  # the structures and the docstore agree inside the lock
            if mode in ("vector", "hybrid"):
                for space, vec, name in queries:
                    found = self._vector_list(space, vec, n, allowed)
                    lists.append(found)
                    for row, score in found:
                        if row not in cosine or cosine[row][0] < score:
                            cosine[row] = (score, name)
            if mode in ("bm25", "hybrid"):
                found = self._bm25().search(query, n, allowed=allowed)
                lists.append(found)
                bm25_scores = dict(found)
            fused = _rrf(lists, self.config.rrf_k)
            # A rebuild from the docstore may bring hidden chunks back into a structure.
            fused = [(r, s) for r, s in fused if r not in self.visibility.hidden]
            # Read chunks page by page, only as far as k hits that pass.
            picked: list[tuple[int, float, Chunk]] = []
            page = k if flt is None else max(2 * k, 16)
            for start in range(0, len(fused), page):
                part = fused[start:start + page]
                chunks = self._store().chunks_by_rows([r for r, _ in part])
                picked += [(r, s, chunks[r]) for r, s in part if r in chunks
                           and (flt is None or flt.matches(chunks[r]))]
                if len(picked) >= k:
                    break
            picked = picked[:k]
            if mode == "hybrid" and queries:
                # Hits found only by BM25 get their cosine too (a stored vector, no model).
                space, vec, name = queries[0]
                missing = [r for r, _, _ in picked if r not in cosine]
                for row, stored in space.reconstruct(missing).items():
                    cosine[row] = (float(stored @ vec), name)
        hits: list[Hit] = []
        for row, rrf, chunk in picked:
            cos, space_name = cosine.get(row, (None, None))
            bm = bm25_scores.get(row)
            if mode == "bm25":
                score = float(bm or 0.0)
            else:
                score = float(cos) if cos is not None else 0.0
            hits.append(_hit(chunk, score, {"rrf": rrf, "vector_score": cos, "bm25_score": bm,
                                            "space": space_name}))
        return hits

    @staticmethod
    def _vector_list(space: AnnIndex, vec: np.ndarray, n: int, allowed: list[int] | None
                     ) -> list[tuple[int, float]]:
        if allowed is not None and len(allowed) <= 4096:
            # Exact: score the allowed rows' stored vectors directly.
            stored = space.reconstruct(allowed)
            if not stored:
                return []
            rows = np.fromiter(stored.keys(), dtype=np.int64, count=len(stored))
            scores = np.stack(list(stored.values())) @ vec
            order = np.argsort(-scores)[:n]
            return [(int(rows[i]), float(scores[i])) for i in order]
        scores, ids = space.search(vec[None, :], n, allowed=allowed)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    def search_vector(self, vector: np.ndarray, k: int,
                      filters: SearchFilters | None = None) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` (a main-space embedding)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        flt = None if filters is None or filters.empty else filters
        queries = [(self._faiss(), np.asarray(vector, dtype=np.float32), "main")]
        hits = self._search("", queries, k, flt, "vector", allowed=None)
        if flt is not None and len(hits) < k:
            allowed = space_store.matching_rows(self._store(), flt)
            if allowed:
                hits = self._search("", queries, k, flt, "vector", allowed=allowed)
        return hits


def _rrf(lists: Sequence[Sequence[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: each list adds 1 / (k + rank) to a row (ranks from 1)."""
    if len(lists) == 1:
        only = sorted(lists[0], key=lambda rs: -rs[1])
        return [(row, 1.0 / (k + rank)) for rank, (row, _) in enumerate(only, 1)]
    fused: dict[int, float] = {}
    for found in lists:
        ranked = sorted(found, key=lambda rs: -rs[1])
        for rank, (row, _) in enumerate(ranked, 1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda rs: -rs[1])


def _stamped(update: SourceUpdate) -> tuple[Chunk, ...]:
    """The update's chunks with the record's time in ``meta["ts"]`` (for time filters)."""
    if update.ts is None:
        return update.chunks
    return tuple(c if "ts" in c.meta else dataclasses.replace(c, meta={**c.meta, "ts": update.ts})
                 for c in update.chunks)


def _hit(chunk: Chunk, score: float, extra: dict[str, Any]) -> Hit:
    return Hit(
        chunk_id=chunk.chunk_id,
        source_id=chunk.source_id,
        text=chunk.text,
        score=score,
        meta={**chunk.meta, "lang": chunk.lang, "kind": chunk.kind, **extra},
    )
