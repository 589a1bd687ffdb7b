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

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, SecretStr, model_validator

from kinject.integrations.langchain_documents import (
    LC_METADATA,
    SEARCH_FIELDS,
    SEARCH_KWARGS,
    check_search_kwargs,
    chunk_to_document,
    doc_filter_matches,
    document_metadata,
    filled_ids,
    hit_to_document,
    local_scored,
    local_search,
)
from kinject.integrations.langchain_embeddings import LangChainEmbedder
from kinject.integrations.langchain_store import KinjectVectorStore

__all__ = [
    "LC_METADATA",
    "SEARCH_FIELDS",
    "SEARCH_KWARGS",
    "KinjectRetriever",
    "KinjectVectorStore",
    "LangChainEmbedder",
    "check_search_kwargs",
    "chunk_to_document",
    "doc_filter_matches",
    "document_metadata",
    "filled_ids",
    "hit_to_document",
    "local_scored",
    "local_search",
]


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
