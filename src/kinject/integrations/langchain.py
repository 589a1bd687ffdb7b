"""LangChain on kinject: a retriever and a vector store backed by kinject's index.

    from kinject.integrations.langchain import KinjectRetriever, KinjectVectorStore
    retriever = KinjectRetriever(service=svc, k=4)           # svc: an open KinjectService
    chain = retriever | format_docs | prompt | llm

``KinjectVectorStore.add_texts`` publishes the texts as records when the service has a broker
attached (they become searchable once ingested, like every other record) and otherwise
indexes them directly into the local replica. Needs ``langchain-core``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from kinject.types import Hit


def hit_to_document(hit: Hit) -> Document:
    return Document(page_content=hit.text, id=hit.chunk_id,
                    metadata={**hit.meta, "source_id": hit.source_id, "chunk_id": hit.chunk_id,
                              "score": hit.score})


class KinjectRetriever(BaseRetriever):
    """Hybrid search over a kinject index as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Any  # KinjectService (or anything with .search(query, k, filters))
    k: int = 4
    filters: Any = None

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [hit_to_document(h) for h in self.service.search(query, self.k, self.filters)]


class _IndexEmbeddings(Embeddings):
    """LangChain's view of the index's own embedder."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.embedder.encode(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class KinjectVectorStore(VectorStore):
    """A LangChain VectorStore whose storage is a kinject index (through a KinjectService)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    @property
    def embeddings(self) -> Embeddings:
        return _IndexEmbeddings(self.service.index.embedder)

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Add texts as sources (ids are their source ids); returns the ids."""
        items = list(texts)
        metas = metadatas or [{} for _ in items]
        source_ids = ids or [f"langchain/{uuid.uuid4().hex}" for _ in items]
        if not (len(items) == len(metas) == len(source_ids)):
            raise ValueError(f"{len(items)} texts, {len(metas)} metadatas and "
                             f"{len(source_ids)} ids do not line up")
        if getattr(self.service, "_bootstrap", None):
            from kinject.types import Record

            self.service.publish([Record(source_id=s, kind="text", content=t.encode("utf-8"),
                                         meta=m)
                                  for s, t, m in zip(source_ids, items, metas, strict=True)])
        else:
            self._index_directly(items, metas, source_ids)
        return source_ids

    def _index_directly(self, texts: list[str], metas: list[dict[str, Any]],
                        source_ids: list[str]) -> None:
        from kinject.index.changes import SourceUpdate
        from kinject.types import Chunk, content_hash

        index = self.service.index
        vecs = index.embedder.encode(texts)
        updates = []
        for i, (text, meta, sid) in enumerate(zip(texts, metas, source_ids, strict=True)):
            chunk = Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                          text=text, meta=dict(meta))
            updates.append(SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                        vectors=vecs[i:i + 1], embedder=index.embedder.name))
        index.apply(updates)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete sources by id (a delete record when a broker is attached)."""
        if not ids:
            return False
        if getattr(self.service, "_bootstrap", None):
            from kinject.types import Record

            self.service.publish([Record(source_id=s, op="delete") for s in ids])
            return True
        from kinject.index.changes import SourceUpdate

        self.service.index.apply([SourceUpdate(op="delete", source_id=s) for s in ids])
        return True

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        hits = self.service.search(query, k, kwargs.get("filters"))
        return [(hit_to_document(h), h.score) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Any:
        return lambda score: score

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> KinjectVectorStore:
        """Needs ``service=`` (an open KinjectService); ``embedding`` is not used: the index
        embeds with its own model."""
        service = kwargs.get("service")
        if service is None:
            raise ValueError("KinjectVectorStore.from_texts needs service=<an open "
                             "KinjectService>")
        store = cls(service)
        store.add_texts(texts, metadatas, ids=ids)
        return store
