"""LangChain on kinject: a retriever and a vector store backed by kinject's index.

    from kinject.integrations.langchain import KinjectRetriever, KinjectVectorStore
    retriever = KinjectRetriever(service=svc, k=4)           # svc: an open KinjectService
    docs = retriever.invoke("who keeps the lighthouse?", k=2)   # k, filters, mode per call
    chain = retriever | format_docs | prompt | llm

    store = KinjectVectorStore(svc)                          # the service's index and embedder
    store = KinjectVectorStore(embedding=OpenAIEmbeddings(), directory="lc-index")  # its own

A document keeps the id it was added under (``Document.id`` is the kinject source id; a
missing id is generated) and comes back with its metadata exactly as given: the search
scores are only in what the ``*_with_score`` methods return. Documents that reached the
index another way (Kafka, ``POST /v1/records``) come back with the source id as their id and
kinject's stored metadata (kind, lang, title, ...) plus their ``chunk_id``.

Over a service with a broker attached (``kinject serve``), writes are published as records
and become searchable once ingested, like every other record; otherwise they are indexed
directly into the local replica. For a kinject running elsewhere, see
:mod:`kinject.integrations.langchain_remote`. Needs ``langchain-core``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, SecretStr, model_validator

from kinject.index.embedders import Embedder, l2_normalise
from kinject.types import Chunk, Hit

# The chunk-meta key that holds a LangChain document's metadata exactly as given (kinject adds
# its own fields beside it: unit, title, ts, ...; search adds its scores).
LC_METADATA = "langchain_metadata"
# What search adds to a hit's meta (index/text_index.py): never part of a document's metadata.
SEARCH_FIELDS = frozenset({"rrf", "vector_score", "bm25_score", "space", "score"})
SEARCH_KWARGS = ("k", "filters", "filter", "mode")


def document_metadata(chunk_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A returned document's metadata: what LangChain was given, or for a chunk that came
    another way, kinject's stored metadata and the chunk id (never the search scores)."""
    given = meta.get(LC_METADATA)
    if isinstance(given, dict):
        return dict(given)
    out = {k: v for k, v in meta.items() if k not in SEARCH_FIELDS}
    out["chunk_id"] = chunk_id
    return out


def hit_to_document(hit: Hit) -> Document:
    return Document(page_content=hit.text, id=hit.source_id,
                    metadata=document_metadata(hit.chunk_id, hit.meta))


def chunk_to_document(chunk: Chunk) -> Document:
    meta = {**chunk.meta, "lang": chunk.lang, "kind": chunk.kind}
    return Document(page_content=chunk.text, id=chunk.source_id,
                    metadata=document_metadata(chunk.chunk_id, meta))


def doc_filter_matches(doc: Document, flt: Mapping[str, Any] | Callable[[Document], bool]
                       ) -> bool:
    """LangChain's ``filter``: a callable on the document, or metadata values that must all
    be equal."""
    if callable(flt):
        return bool(flt(doc))
    return all(k in doc.metadata and doc.metadata[k] == v for k, v in flt.items())


def check_search_kwargs(kwargs: Mapping[str, Any]) -> None:
    """An unknown search argument is an error, not silently ignored."""
    unknown = sorted(set(kwargs) - set(SEARCH_KWARGS))
    if unknown:
        raise TypeError(f"unknown search argument(s) {', '.join(unknown)}; kinject takes "
                        f"{', '.join(SEARCH_KWARGS)}")


def filled_ids(n: int, ids: Sequence[str | None] | None) -> list[str]:
    """The ids to write ``n`` documents under: as given, generated where missing."""
    if ids is None:
        ids = [None] * n
    if len(ids) != n:
        raise ValueError(f"{n} texts but {len(ids)} ids")
    out = []
    for i in ids:
        if i is not None and (not isinstance(i, str) or not i.strip()):
            raise ValueError(f"a document id must be a non-empty string or None, got {i!r}")
        out.append(i if i is not None else uuid.uuid4().hex)
    return out


class LangChainEmbedder:
    """A LangChain ``Embeddings`` behind kinject's :class:`Embedder` protocol, so kinject's
    index (FAISS + BM25 + docstore) can embed with whatever model a LangChain user has."""

    def __init__(self, embeddings: Embeddings, name: str | None = None) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(f"embeddings must be a langchain Embeddings, got {type(embeddings)}")
        self.embeddings = embeddings
        self._name = name
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension"))
        return self._dim

    @property
    def name(self) -> str:
        kind = type(self.embeddings)
        return self._name or f"langchain:{kind.__module__}.{kind.__qualname__}:{self.dim}"

    def warm_up(self) -> None:
        _ = self.dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        # kinject's index compares by inner product: rows of unit length make it a cosine.
        return l2_normalise(np.asarray(self.embeddings.embed_documents(items), np.float32))

    def __repr__(self) -> str:
        return f"LangChainEmbedder({self.embeddings!r})"


class _IndexEmbeddings(Embeddings):
    """LangChain's view of the index's own embedder."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.embedder.encode(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class KinjectRetriever(BaseRetriever):
    """Hybrid search over kinject as a LangChain retriever: a local ``service`` (an open
    KinjectService), or a kinject running elsewhere (``base_url``, ``api_key``: reads
    ``GET /v1/search``). ``k``, ``filters`` (kinject's ``key=value`` filters), ``filter``
    (metadata values or a callable on the document) and ``mode`` (hybrid|vector|bm25) are
    defaults that each call may override: ``retriever.invoke(q, k=1)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Any = None  # KinjectService (or anything with .search(query, k, filters, mode))
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 30.0
    k: int = 4
    filters: Any = None
    filter: Any = None
    mode: str | None = None

    @model_validator(mode="after")
    def _one_backend(self) -> KinjectRetriever:
        if (self.service is None) == (self.base_url is None):
            raise ValueError("KinjectRetriever needs either service= (an open KinjectService) "
                             "or base_url= (a running kinject), not both")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        return self

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        check_search_kwargs(kwargs)
        return {"k": kwargs.get("k", self.k), "filters": kwargs.get("filters", self.filters),
                "filter": kwargs.get("filter", self.filter), "mode": kwargs.get("mode", self.mode)}

    def _client(self) -> Any:
        from kinject.integrations.http_client import KinjectClient

        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return KinjectClient(str(self.base_url), key, self.timeout_s)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        a = self._args(kwargs)
        if self.base_url is not None:
            return self._client().search_documents(query, **a)
        return local_search(self.service.search, query, **a)

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        a = self._args(kwargs)
        if self.base_url is not None:
            return await self._client().asearch_documents(query, **a)
        return await run_in_executor(None, local_search, self.service.search, query, **a)


def local_search(search: Callable[..., list[Hit]], query: str, k: int = 4, filters: Any = None,
                 filter: Any = None, mode: str | None = None) -> list[Document]:
    return [d for d, _ in local_scored(search, query, k, filters, filter, mode)]


def local_scored(search: Callable[..., list[Hit]], query: str, k: int = 4, filters: Any = None,
                 filter: Any = None, mode: str | None = None
                 ) -> list[tuple[Document, float]]:
    """(document, score) pairs from a kinject search; ``filter`` (LangChain's, on the
    documents' metadata) is applied to a wider candidate list, so up to ``k`` pass."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    wide = max(4 * k, 50) if filter is not None else k
    out = []
    for hit in search(query, wide, filters, mode):
        doc = hit_to_document(hit)
        if filter is None or doc_filter_matches(doc, filter):
            out.append((doc, float(hit.score)))
    return out[:k]


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


def _same_embedder(embedding: Embeddings, embedder: Embedder) -> bool:
    """Whether ``embedding`` is the index's own embedder (as LangChain sees it)."""
    if isinstance(embedding, _IndexEmbeddings):
        return embedding.embedder is embedder
    return isinstance(embedder, LangChainEmbedder) and embedder.embeddings is embedding
