"""LangChain on a kinject running elsewhere, over its HTTP API (httpx).

    from kinject.integrations.langchain import KinjectRetriever
    from kinject.integrations.langchain_remote import KinjectRemoteVectorStore
    retriever = KinjectRetriever(base_url="http://kinject:8000", k=4)  # GET /v1/search
    store = KinjectRemoteVectorStore("http://kinject:8000", api_key="...")  # a write key
    store.add_documents(docs, ids=[...])   # POST /v1/records, one record per document

A document's id is its kinject ``source_id``; its metadata travels in the record's meta and
comes back exactly as given. Writes go through Kafka: they are accepted at once (202) and
become searchable once ingested, usually within a second. ``wait_s`` (seconds) makes
``add_*`` and ``delete`` return only once the server's index has applied the change (its
``GET /v1/lineage`` shows a newer update of each id): read your writes. None (the default)
returns as soon as the server has accepted the records.

What a document's text becomes is the server's ingest pipeline's doing (normalised,
dates and units annotated, split into chunks, boilerplate dropped): a remote store returns
the text kinject indexed, which may differ from the text given.

The ingest worker splits a long text into chunks: such a document comes back as several
documents with the same id, one a chunk. ``get_by_ids`` reads ``GET /v1/search`` filtered
to the id (kinject's ``source=`` prefix filter, then the exact id): it sees what search
sees, at most the server's ``max_k`` chunks an id, and not the texts kinject keeps out of
search as duplicates of another source's text.

``namespace``: a collection inside one kinject. Ids are stored as ``<namespace>/<id>`` and
every read is filtered to that prefix, so stores with different namespaces (``a`` and
``ab`` too) neither see nor overwrite each other's documents (kinject still hides a text that
duplicates another source's, across namespaces, unless the server runs with
``KINJECT_INGEST__DEDUPE=false``). A namespace may end with ``/`` (``a/`` is ``a``) but
holds none elsewhere: ``a`` with id ``b/1`` and ``a/b`` with id ``1`` would be one source.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from kinject.integrations.http_client import KinjectClient, KinjectHttpError
from kinject.integrations.langchain import LC_METADATA, check_search_kwargs, filled_ids

__all__ = ["KinjectHttpError", "KinjectRemoteVectorStore"]


class KinjectRemoteVectorStore(VectorStore):
    """A LangChain VectorStore over a running kinject: writes ``POST /v1/records`` (upserts
    and deletes, which need a key with the write role), reads ``GET /v1/search``. The server
    embeds with its own model, so no ``embedding`` is taken. See the module's docstring for
    ``wait_s``."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 30.0,
                 wait_s: float | None = None, search_mode: str | None = None,
                 namespace: str = "") -> None:
        if wait_s is not None and wait_s <= 0:
            raise ValueError(f"wait_s must be positive or None, got {wait_s!r}")
        self.client = KinjectClient(base_url, api_key, timeout_s, namespace)
        self.namespace = self.client.namespace  # "<namespace>/", the prefix of its ids
        self.wait_s = wait_s
        self.search_mode = search_mode

    @property
    def embeddings(self) -> Embeddings | None:
        return None  # the server's own embedder (GET /v1/status names it)

    # -- writes ---------------------------------------------------------------------------
    def _records(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None,
                 ids: Sequence[str | None] | None) -> tuple[list[str], list[dict[str, Any]]]:
        """The ids (generated where None) and the records to publish."""
        items = list(texts)
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in items]
        if len(metas) != len(items):
            raise ValueError(f"{len(items)} texts but {len(metas)} metadatas")
        doc_ids = filled_ids(len(items), ids)
        records = []
        for doc_id, text, meta in zip(doc_ids, items, metas, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"document {doc_id!r} has no text; kinject indexes text only")
            json.dumps(meta)  # fails here, naming the value, rather than in the request
            records.append({"source_id": self.namespace + doc_id, "kind": "text",
                            "content": text, "meta": {LC_METADATA: meta}})
        return doc_ids, records

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Publish the texts as records under ``ids`` (generated where None); returns the ids."""
        doc_ids, records = self._records(texts, metadatas, ids)
        marks = self._marks(doc_ids)
        self.client.publish(records)
        self._wait(marks, "upsert")
        return doc_ids

    async def aadd_texts(self, texts: Iterable[str],
                         metadatas: list[dict[str, Any]] | None = None, *,
                         ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        doc_ids, records = self._records(texts, metadatas, ids)
        marks = await self._amarks(doc_ids)
        await self.client.apublish(records)
        await self._await(marks, "upsert")
        return doc_ids

    def _delete_ids(self, ids: list[str] | None) -> list[str]:
        if ids is None:
            raise ValueError("give the ids to delete; kinject does not empty an index through "
                             "LangChain")
        return list(dict.fromkeys(ids))

    def _deletes(self, ids: list[str]) -> list[dict[str, Any]]:
        return [{"source_id": self.namespace + s, "op": "delete"} for s in ids]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Publish a delete record for each id (unknown ids change nothing)."""
        doc_ids = self._delete_ids(ids)
        if doc_ids:
            marks = self._marks(doc_ids)
            self.client.publish(self._deletes(doc_ids))
            self._wait(marks, "delete")
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        doc_ids = self._delete_ids(ids)
        if doc_ids:
            marks = await self._amarks(doc_ids)
            await self.client.apublish(self._deletes(doc_ids))
            await self._await(marks, "delete")
        return True

    # -- read your writes: wait until the server's index has applied them -------------------
    # An id's mark is how many updates the server had applied to it before the write; the
    # write shows once a later update with its op is there (at least once: a replayed older
    # record adds an event too, but never one with a later offset).
    def _marks(self, doc_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        if self.wait_s is None:
            return {}
        return {d: self.client.events(d) for d in dict.fromkeys(doc_ids)}

    async def _amarks(self, doc_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        if self.wait_s is None:
            return {}
        wanted = list(dict.fromkeys(doc_ids))
        found = await asyncio.gather(*(self.client.aevents(d) for d in wanted))
        return dict(zip(wanted, found, strict=True))

    @staticmethod
    def _applied(before: list[dict[str, Any]], now: list[dict[str, Any]], op: str) -> bool:
        last = max((e["offset"] for e in before if e.get("offset") is not None), default=-1)
        return any(e["op"] == op and (e.get("offset") is None or e["offset"] > last)
                   for e in now[len(before):])

    def _wait(self, marks: dict[str, list[dict[str, Any]]], op: str) -> None:
        if self.wait_s is None:
            return
        deadline = time.monotonic() + self.wait_s
        pending = dict(marks)
        while True:
            pending = {d: m for d, m in pending.items()
                       if not self._applied(m, self.client.events(d), op)}
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(self._late(list(pending)))
            time.sleep(0.1)

    async def _await(self, marks: dict[str, list[dict[str, Any]]], op: str) -> None:
        if self.wait_s is None:
            return
        deadline = time.monotonic() + self.wait_s
        pending = dict(marks)
        while True:
            now = await asyncio.gather(*(self.client.aevents(d) for d in pending))
            pending = {d: m for (d, m), events in zip(pending.items(), now, strict=True)
                       if not self._applied(m, events, op)}
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(self._late(list(pending)))
            await asyncio.sleep(0.1)

    def _late(self, pending: list[str]) -> str:
        return (f"{len(pending)} of the ids ({', '.join(pending[:5])}) did not show the change "
                f"within wait_s={self.wait_s:g} s: the records were accepted; check the ingest "
                f"workers and `kinject dlq`")

    # -- reads ----------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents searchable under these ids; ids not found are left out."""
        return [d for sid in dict.fromkeys(ids) for d in self.client.documents_of(sid)]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        wanted = list(dict.fromkeys(ids))
        found = await asyncio.gather(*(self.client.adocuments_of(s) for s in wanted))
        return [d for docs in found for d in docs]

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        check_search_kwargs(kwargs)
        return {"filters": kwargs.get("filters"), "filter": kwargs.get("filter"),
                "mode": kwargs.get("mode", self.search_mode)}

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """Documents with their score (cosine similarity; BM25 score in ``mode="bm25"``).
        kwargs: ``filters`` (kinject's ``key=value`` filters), ``filter`` (metadata values or
        a callable on the document), ``mode``."""
        return self.client.scored_documents(query, k, **self._args(kwargs))

    async def asimilarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any
                                            ) -> list[tuple[Document, float]]:
        return await self.client.ascored_documents(query, k, **self._args(kwargs))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any
                                 ) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: min(1.0, max(0.0, score))

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: Sequence[str | None] | None = None, **kwargs: Any
                   ) -> KinjectRemoteVectorStore:
        """Publish ``texts`` to the kinject at ``base_url=`` (``api_key=``, ``wait_s=``...).
        ``embedding`` must be None: the server embeds with its own model."""
        if embedding is not None:
            raise ValueError(f"a remote kinject embeds with its own model; it cannot take "
                             f"embedding={type(embedding).__name__} (pass None)")
        if "base_url" not in kwargs:
            raise ValueError("KinjectRemoteVectorStore.from_texts needs base_url=")
        store = cls(**kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
