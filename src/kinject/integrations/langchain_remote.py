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

``namespace``: a collection inside one kinject. Ids are stored as ``<namespace><id>`` and
every read is filtered to that prefix, so stores with different namespaces neither see nor
overwrite each other's documents (kinject still hides a text that duplicates another
source's, across namespaces, unless the server runs with ``KINJECT_INGEST__DEDUPE=false``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from kinject.errors import KinjectError
from kinject.integrations.langchain import (
    LC_METADATA,
    check_search_kwargs,
    doc_filter_matches,
    document_metadata,
    filled_ids,
)

# Records per POST /v1/records (the server's default limit is 500).
BATCH = 100
# The k get_by_ids asks for (the server's default max_k).
GET_K = 50


class KinjectHttpError(KinjectError):
    """kinject's API answered with an error: the status and its JSON error."""


def _filter_params(filters: Any) -> list[str]:
    """kinject's search filters as ``key=value`` strings: given as such, or a mapping (a
    list value repeats the key)."""
    if filters is None:
        return []
    if isinstance(filters, str):
        return [filters]
    if isinstance(filters, Mapping):
        out = []
        for key, value in filters.items():
            values = value if isinstance(value, list | tuple) else [value]
            out += [f"{key}={v}" for v in values]
        return out
    if isinstance(filters, Iterable):
        return [str(f) for f in filters]
    raise TypeError(f"filters for a remote kinject must be key=value strings or a mapping, "
                    f"got {type(filters)}")


def hit_document(hit: Mapping[str, Any], namespace: str = "") -> Document:
    return Document(page_content=hit["text"], id=hit["source_id"][len(namespace):],
                    metadata=document_metadata(hit["chunk_id"], hit.get("meta") or {}))


class KinjectClient:
    """The few calls of kinject's API the LangChain classes need, sync and async."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0,
                 namespace: str = "") -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the key
        return f"KinjectClient({self.base_url!r})"

    @staticmethod
    def _check(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                error = r.json().get("error", r.text)
            except ValueError:
                error = r.text
            raise KinjectHttpError(f"{r.request.method} {r.request.url.path} answered "
                                   f"{r.status_code}: {error}")
        return r.json()

    def _search_params(self, query: str, k: int, filters: Any, mode: str | None
                       ) -> list[tuple[str, str | int]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        params: list[tuple[str, str | int]] = [("q", query), ("k", k)]
        given = _filter_params(filters)
        if self.namespace:
            if any(f.split("=", 1)[0].strip().lower() == "source" for f in given):
                raise ValueError("a store with a namespace filters by source itself; give "
                                 "no source= filter")
            given.append(f"source={self.namespace}")
        params += [("filter", f) for f in given]
        if mode:
            params.append(("mode", mode))
        return params

    # -- sync -------------------------------------------------------------------------------
    def _get(self, path: str, params: Any) -> Any:
        with httpx.Client(base_url=self.base_url, headers=self.headers,
                          timeout=self.timeout_s) as c:
            return self._check(c.get(path, params=params))

    def _post(self, path: str, body: Any) -> Any:
        with httpx.Client(base_url=self.base_url, headers=self.headers,
                          timeout=self.timeout_s) as c:
            return self._check(c.post(path, json=body))

    def search(self, query: str, k: int = 4, filters: Any = None, mode: str | None = None
               ) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = self._get(
            "/v1/search", self._search_params(query, k, filters, mode))["hits"]
        return hits

    def scored_documents(self, query: str, k: int = 4, filters: Any = None, filter: Any = None,
                         mode: str | None = None) -> list[tuple[Document, float]]:
        wide = max(4 * k, GET_K) if filter is not None else k
        return _scored(self.search(query, wide, filters, mode), k, filter, self.namespace)

    def search_documents(self, query: str, k: int = 4, filters: Any = None, filter: Any = None,
                         mode: str | None = None) -> list[Document]:
        return [d for d, _ in self.scored_documents(query, k, filters, filter, mode)]

    def publish(self, records: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(records), BATCH):
            self._post("/v1/records", {"records": list(records[start:start + BATCH])})

    def _by_id_params(self, doc_id: str) -> list[tuple[str, str | int]]:
        sid = self.namespace + doc_id
        return [("q", doc_id), ("k", GET_K), ("filter", f"source={sid}"), ("mode", "vector")]

    def _of(self, doc_id: str, hits: list[dict[str, Any]]) -> list[Document]:
        sid = self.namespace + doc_id
        return [hit_document(h, self.namespace) for h in hits if h["source_id"] == sid]

    def documents_of(self, doc_id: str) -> list[Document]:
        """The chunks search shows under one id."""
        return self._of(doc_id, self._get("/v1/search", self._by_id_params(doc_id))["hits"])

    def _lineage_path(self, doc_id: str) -> str:
        return "/v1/lineage/" + quote(self.namespace + doc_id, safe="/")

    @staticmethod
    def _events(r: httpx.Response) -> list[dict[str, Any]]:
        if r.status_code == 404:  # no record of this id has reached the index yet
            return []
        events: list[dict[str, Any]] = KinjectClient._check(r)["events"]
        return events

    def events(self, doc_id: str) -> list[dict[str, Any]]:
        """The updates the server's index has applied to an id (``GET /v1/lineage``)."""
        with httpx.Client(base_url=self.base_url, headers=self.headers,
                          timeout=self.timeout_s) as c:
            return self._events(c.get(self._lineage_path(doc_id)))

    # -- async ------------------------------------------------------------------------------
    async def _aget(self, path: str, params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=self.timeout_s) as c:
            return self._check(await c.get(path, params=params))

    async def _apost(self, path: str, body: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=self.timeout_s) as c:
            return self._check(await c.post(path, json=body))

    async def asearch(self, query: str, k: int = 4, filters: Any = None,
                      mode: str | None = None) -> list[dict[str, Any]]:
        body = await self._aget("/v1/search", self._search_params(query, k, filters, mode))
        hits: list[dict[str, Any]] = body["hits"]
        return hits

    async def ascored_documents(self, query: str, k: int = 4, filters: Any = None,
                                filter: Any = None, mode: str | None = None
                                ) -> list[tuple[Document, float]]:
        wide = max(4 * k, GET_K) if filter is not None else k
        return _scored(await self.asearch(query, wide, filters, mode), k, filter,
                       self.namespace)

    async def asearch_documents(self, query: str, k: int = 4, filters: Any = None,
                                filter: Any = None, mode: str | None = None) -> list[Document]:
        return [d for d, _ in await self.ascored_documents(query, k, filters, filter, mode)]

    async def apublish(self, records: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(records), BATCH):
            await self._apost("/v1/records", {"records": list(records[start:start + BATCH])})

    async def aevents(self, doc_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=self.timeout_s) as c:
            return self._events(await c.get(self._lineage_path(doc_id)))

    async def adocuments_of(self, doc_id: str) -> list[Document]:
        body = await self._aget("/v1/search", self._by_id_params(doc_id))
        return self._of(doc_id, body["hits"])


def _scored(hits: list[dict[str, Any]], k: int, filter: Any, namespace: str = ""
            ) -> list[tuple[Document, float]]:
    out = []
    for hit in hits:
        doc = hit_document(hit, namespace)
        if filter is None or doc_filter_matches(doc, filter):
            out.append((doc, float(hit["score"])))
    return out[:k]


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
        self.namespace = namespace
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
