"""KinjectVectorStore: a LangChain VectorStore over a kinject text index (a service's, or
one of its own). Needs ``langchain-core``."""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from kinject.index.embedders import l2_normalise
from kinject.integrations.langchain_documents import (
    LC_METADATA,
    check_search_kwargs,
    chunk_to_document,
    filled_ids,
    local_scored,
    local_search,
)
from kinject.integrations.langchain_embeddings import (
    LangChainEmbedder,
    _IndexEmbeddings,
    _same_embedder,
)
from kinject.types import Chunk, Hit


class KinjectVectorStore(VectorStore):
    """A LangChain VectorStore whose storage is a kinject text index (docstore + FAISS + BM25).

    ``KinjectVectorStore(service)``: the index of an open KinjectService, embedded with the
    index's own embedder (an ``embedding`` given beside it is refused: the stored vectors
    would not be comparable). ``KinjectVectorStore(embedding=..., directory=...)``: an index of
    its own in ``directory`` (a temporary one, removed by :meth:`close`, when not given) that
    embeds with the LangChain embedding given; it shows every document it holds (no hiding
    of duplicates of another id's text). ``search_mode``: hybrid (default), vector or bm25.
    """

    def __init__(self, service: Any = None, *, embedding: Embeddings | None = None,
                 directory: str | Path | None = None, search_mode: str | None = None) -> None:
        self.service = service
        self.search_mode = search_mode
        self._own: Any = None
        self._embedding = embedding
        if service is not None:
            if embedding is not None and not _same_embedder(embedding, service.index.embedder):
                raise ValueError(
                    f"this store writes into the kinject index of the service, which embeds "
                    f"with its own embedder ({service.index.embedder.name}); it cannot take "
                    f"embedding={type(embedding).__name__}: vectors of two models are not "
                    "comparable. Leave embedding out (set KINJECT_MODELS__EMBEDDER to choose "
                    "the index's model), or open a store of its own: "
                    "KinjectVectorStore(embedding=..., directory=...)")
            if directory is not None:
                raise ValueError("directory= is for a store of its own; a service's index "
                                 "lives in its data directory")
            return
        if embedding is None:
            raise ValueError("KinjectVectorStore needs service= (an open KinjectService) or "
                             "embedding= (a LangChain Embeddings for an index of its own)")
        from kinject.index.text_index import TextIndex, TextIndexConfig

        if directory is None:
            directory = tempfile.mkdtemp(prefix="kinject-langchain-")
            self._cleanup: Any = weakref.finalize(self, shutil.rmtree, directory, True)
        else:
            self._cleanup = None
        self._own = TextIndex(Path(directory), LangChainEmbedder(embedding),
                              config=TextIndexConfig(near_duplicate_threshold=None)).open()

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close an index of its own (a service's index is closed with the service)."""
        if self._own is not None:
            self._own.close()
            self._own = None
            if self._cleanup is not None:
                self._cleanup()

    def __enter__(self) -> KinjectVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> Any:
        if self.service is not None:
            return self.service.index
        if self._own is None:
            raise RuntimeError("this KinjectVectorStore is closed")
        return self._own

    @property
    def embeddings(self) -> Embeddings:
        if self._embedding is not None:
            return self._embedding
        return _IndexEmbeddings(self.index.embedder)

    def _published(self) -> bool:
        # the facade's attached broker (kinject serve); a plain service has none
        return bool(getattr(getattr(self.service, "broker", None), "bootstrap", None))

    # -- writes ---------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Add texts under ``ids`` (kinject source ids; generated where None). Adding under an
        id that exists replaces what it held. Returns the ids."""
        items = list(texts)
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in items]
        if len(metas) != len(items):
            raise ValueError(f"{len(items)} texts but {len(metas)} metadatas")
        source_ids = filled_ids(len(items), ids)
        for sid, text in zip(source_ids, items, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"document {sid!r} has no text; kinject indexes text only")
        if self._published():
            from kinject.types import Record

            self.service.publish([Record(source_id=s, kind="text", content=t.encode("utf-8"),
                                         meta={LC_METADATA: m}, ts=time.time())
                                  for s, t, m in zip(source_ids, items, metas, strict=True)])
        else:
            self._index_directly(items, metas, source_ids)
        return source_ids

    def _index_directly(self, texts: list[str], metas: list[dict[str, Any]],
                        source_ids: list[str]) -> None:
        import json

        from kinject.index.changes import SourceUpdate
        from kinject.ingest.normalise import detect_lang
        from kinject.types import content_hash

        index = self.index
        vecs = index.embedder.encode(texts)
        now = time.time()
        updates = []
        for i, (text, meta, sid) in enumerate(zip(texts, metas, source_ids, strict=True)):
            # chunk_id as the ingest pipeline makes it; new metadata for the same text updates
            # the stored row's meta.
            stored = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)
            chunk = Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                          text=text, lang=detect_lang(text), meta={LC_METADATA: meta})
            updates.append(SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                        vectors=vecs[i:i + 1], embedder=index.embedder.name,
                                        content_hash=content_hash(text, stored), ts=now))
        index.apply(updates)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents (kinject sources) with these ids; unknown ids are ignored.
        With a broker attached, a delete record for each."""
        if ids is None:
            raise ValueError("give the ids to delete; kinject does not empty an index through "
                             "LangChain")
        if not ids:
            return True
        if self._published():
            from kinject.types import Record

            self.service.publish([Record(source_id=s, op="delete") for s in ids])
            return True
        from kinject.index.changes import SourceUpdate

        known = {c.source_id for c in self.index.chunks_of(ids)}
        self.index.apply([SourceUpdate(op="delete", source_id=s) for s in ids if s in known])
        return True

    # -- reads ----------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents held under these ids (a source split into chunks gives one document
        a chunk); ids not found are left out."""
        return [chunk_to_document(c) for c in self.index.chunks_of(list(ids))]

    def _search(self, query: str, k: int, filters: Any = None, mode: str | None = None
                ) -> list[Hit]:
        mode = mode or self.search_mode
        if self.service is not None:
            return list(self.service.search(query, k, filters, mode))
        from kinject.index.filters import SearchFilters

        return list(self.index.search(query, k, SearchFilters.coerce(filters), mode or "hybrid"))

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """Documents with their score (cosine similarity; BM25 score in ``mode="bm25"``).
        kwargs: ``filters`` (kinject's ``key=value`` filters), ``filter`` (metadata values or
        a callable on the document), ``mode``."""
        check_search_kwargs(kwargs)
        return local_scored(self._search, query, k, kwargs.get("filters"), kwargs.get("filter"),
                            kwargs.get("mode"))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any
                                    ) -> list[Document]:
        """Nearest documents to a vector of the index's embedding model (``filters``,
        ``filter`` as in :meth:`similarity_search_with_score`)."""
        check_search_kwargs(kwargs)
        from kinject.index.filters import SearchFilters

        vec = l2_normalise(np.asarray([embedding], np.float32))[0]
        flt = SearchFilters.coerce(kwargs.get("filters"))

        def by_vector(_q: str, n: int, _f: Any, _m: Any) -> list[Hit]:
            return list(self.index.search_vector(vec, n, flt))

        return local_search(by_vector, "", k, None, kwargs.get("filter"))

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # Scores are cosine similarities: clipped to LangChain's [0, 1] relevance range.
        return lambda score: min(1.0, max(0.0, score))

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: Sequence[str | None] | None = None, **kwargs: Any) -> KinjectVectorStore:
        """A store holding ``texts``: over ``service=`` (an open KinjectService; ``embedding``
        must then be None), or an index of its own that embeds with ``embedding``
        (``directory=`` where it lives, a temporary one when not given)."""
        store = cls(kwargs.pop("service", None), embedding=embedding,
                    directory=kwargs.pop("directory", None),
                    search_mode=kwargs.pop("search_mode", None))
        if kwargs:
            raise TypeError(f"unknown argument(s) {', '.join(sorted(kwargs))}")
        store.add_texts(texts, metadatas, ids=ids)
        return store
