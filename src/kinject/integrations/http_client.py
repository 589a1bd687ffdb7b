"""A small client of kinject's HTTP API (httpx, sync and async): the calls the LangChain
classes make (search, publish records, lineage), answers turned into LangChain documents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from langchain_core.documents import Document

from kinject.errors import KinjectError
from kinject.integrations.langchain import doc_filter_matches, document_metadata

# Records per POST /v1/records (the server's default limit is 500).
BATCH = 100
# The k get_by_ids asks for (the server's default max_k).
GET_K = 50
# Between a namespace and a document's id in its source_id.
NAMESPACE_SEP = "/"


class KinjectHttpError(KinjectError):
    """kinject's API answered with an error: the status and its JSON error."""


def filter_params(filters: Any) -> list[str]:
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


def namespace_prefix(namespace: str) -> str:
    """What a namespace's ids are stored under: ``<namespace>/`` ("" for none). The separator
    keeps namespaces apart (``a`` and ``ab`` share no id), so a namespace may not hold it but
    at its end (``a/`` is ``a``): ``a`` with id ``b/1`` and ``a/b`` with id ``1`` would be
    one source."""
    name = namespace[:-1] if namespace.endswith(NAMESPACE_SEP) else namespace
    if NAMESPACE_SEP in name:
        raise ValueError(f"a namespace may not contain {NAMESPACE_SEP!r} but at its end, got "
                         f"{namespace!r}")
    return name + NAMESPACE_SEP if name else ""


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
        self.namespace = namespace_prefix(namespace)  # "<namespace>/": see namespace_prefix
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
        given = filter_params(filters)
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
        wide = max(k, GET_K) if filter is not None else k  # 4k could pass the max_k
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
        wide = max(k, GET_K) if filter is not None else k  # 4k could pass the max_k
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
