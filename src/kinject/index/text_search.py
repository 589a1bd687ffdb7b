"""The text index's search: queries routed by language to the vector spaces, BM25, the two
fused (a convex combination of their normalised scores by default, or reciprocal rank),
filtered, hidden chunks left out. A mixin of :class:`~kinject.index.text_index.TextIndex`.

Why not reciprocal-rank fusion by default: with two lists and k=60, 1/(60+rank) is so flat
that a chunk in both lists at rank 30 (2/90) beats the first of one list alone (1/61), so
the passage with the best cosine, or the only one holding the query's rare term, sank to
10th behind chunks both retrievers found middling. On bench/realdocs.py's dev documents
(--search-only, the same index and candidates) hybrid recall@4 was 0.89 with RRF, below BM25
alone (0.96); scores min-max normalised over the candidates and weighted 0.5/0.5 give 0.96
(recall@1 0.71 -> 0.82), any weight from 0.4 to 0.6 the same: the convex combination that
Bruch et al. (2023, "An analysis of fusion functions for hybrid retrieval") found better than
RRF in and out of domain.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.index import space_store
from kinject.index.ann_index import AnnIndex
from kinject.index.embedders import Embedder
from kinject.index.filters import SearchFilters
from kinject.index.text_config import SEARCH_MODES, ZH_LANGS, ZH_SPACE, TextIndexConfig
from kinject.index.visibility import ChunkVisibility
from kinject.types import Chunk, Hit

if TYPE_CHECKING:
    from kinject.index.bm25_index import Bm25Index
    from kinject.index.docstore import Docstore


def query_lang(text: str) -> str:
    from kinject.ingest.normalise import detect_lang

    return str(detect_lang(text))


class TextIndexSearch:
    """Search a TextIndex's chunks (state and accessors are the TextIndex's)."""

    embedder: Embedder
    zh_embedder: Embedder | None
    config: TextIndexConfig
    zh: AnnIndex | None
    visibility: ChunkVisibility
    _write_lock: threading.Lock

    if TYPE_CHECKING:
        def _store(self) -> Docstore: ...
        def _faiss(self) -> AnnIndex: ...
        def _bm25(self) -> Bm25Index: ...

    def search(
        self,
        query: str,
        k: int = 5,
        filters: SearchFilters | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query`` that pass ``filters``.

        ``mode``: ``hybrid`` (vector + BM25, fused as ``config.fusion`` says), ``vector`` or
        ``bm25``. A Chinese (or mixed) query searches the multilingual space when there is
        one. ``Hit.score`` is the cosine similarity in the space searched (``vector`` and
        ``hybrid``: comparable across queries, usable as a relevance threshold) or the BM25
        score (``bm25``); ``Hit.meta`` adds ``fused``, ``vector_score``, ``bm25_score`` and
        ``space``; hits are ordered by ``fused`` (in ``vector`` and ``bm25`` mode, the score).
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
        spaces: list[dict[int, float]] = []  # per space searched: row -> cosine
        cosine: dict[int, tuple[float, str]] = {}
        bm25_scores: dict[int, float] = {}
        with self._write_lock:  # the structures and the docstore agree inside the lock
            if mode in ("vector", "hybrid"):
                for space, vec, _ in queries:
                    found = self._vector_list(space, vec, n, allowed)
                    lists.append(found)
                    spaces.append(dict(found))
            if mode in ("bm25", "hybrid"):
                found = self._bm25().search(query, n, allowed=allowed)
                lists.append(found)
                bm25_scores = dict(found)
            if mode == "hybrid":
                # Every candidate gets its cosine in every space searched (stored vectors,
                # no model): hits found only by BM25 are scored, and shown, by meaning too.
                candidates = set(bm25_scores).union(*spaces)
                for (space, vec, _), scores in zip(queries, spaces, strict=True):
                    missing = [r for r in candidates if r not in scores]
                    scores.update((r, float(v @ vec))
                                  for r, v in space.reconstruct(missing).items())
            for (_, _, name), scores in zip(queries, spaces, strict=False):
                for row, score in scores.items():
                    if row not in cosine or cosine[row][0] < score:
                        cosine[row] = (score, name)
            if mode != "hybrid":
                fused = sorted(lists[0], key=lambda rs: -rs[1]) if len(lists) == 1 else \
                    _rrf(lists, self.config.rrf_k)
            elif self.config.fusion == "rrf":
                fused = _rrf(lists, self.config.rrf_k)
            else:
                fused = _convex(spaces, bm25_scores, self.config.vector_weight)
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
        hits: list[Hit] = []
        for row, fused_score, chunk in picked:
            cos, space_name = cosine.get(row, (None, None))
            bm = bm25_scores.get(row)
            if mode == "bm25":
                score = float(bm or 0.0)
            else:
                score = float(cos) if cos is not None else 0.0
            hits.append(_hit(chunk, score, {"fused": fused_score, "vector_score": cos,
                                            "bm25_score": bm, "space": space_name}))
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


def _convex(spaces: Sequence[dict[int, float]], bm25: dict[int, float], vector_weight: float
            ) -> list[tuple[int, float]]:
    """Rows by ``vector_weight * vector + (1 - vector_weight) * bm25``, each retriever's scores
    min-max normalised over the candidates (a row's vector part is its best over the spaces
    searched, each normalised alone: USE and MiniLM cosines are not on one scale). A row a
    retriever did not score gets that retriever's 0."""
    dense: dict[int, float] = {}
    for scores in spaces:
        for row, value in _min_max(scores).items():
            dense[row] = max(dense.get(row, 0.0), value)
    # BM25's floor is 0 (no query term), not the least candidate's score.
    top = max(bm25.values(), default=0.0)
    words = {row: s / top for row, s in bm25.items()} if top > 0 else {}
    fused = {row: vector_weight * dense.get(row, 0.0) + (1 - vector_weight) * words.get(row, 0.0)
             for row in dense.keys() | words.keys()}
    return sorted(fused.items(), key=lambda rs: (-rs[1], -dense.get(rs[0], 0.0), rs[0]))


def _min_max(scores: dict[int, float]) -> dict[int, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo <= 1e-9:
        return dict.fromkeys(scores, 1.0)
    return {row: (s - lo) / (hi - lo) for row, s in scores.items()}


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



def _hit(chunk: Chunk, score: float, extra: dict[str, Any]) -> Hit:
    return Hit(
        chunk_id=chunk.chunk_id,
        source_id=chunk.source_id,
        text=chunk.text,
        score=score,
        meta={**chunk.meta, "lang": chunk.lang, "kind": chunk.kind, **extra},
    )
