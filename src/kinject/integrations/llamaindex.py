"""LlamaIndex on kinject: a retriever backed by kinject's hybrid search, in-process or remote.

    from kinject.integrations.llamaindex import KinjectLlamaRetriever
    retriever = KinjectLlamaRetriever(service=svc, k=4)                 # an open KinjectService
    retriever = KinjectLlamaRetriever(base_url="http://kinject:8000")   # GET /v1/search
    nodes = retriever.retrieve("Who runs the Osk lab?")                 # list[NodeWithScore]
    engine = RetrieverQueryEngine.from_args(retriever, llm=...)         # any LlamaIndex LLM

A node is one kinject chunk: ``node.id_`` is its chunk id, ``node.ref_doc_id`` the kinject
source id it came from (also ``metadata["source_id"]``), its metadata the chunk's stored
metadata (for a document added through LangChain, the metadata it was given) and its score
the search score (cosine similarity, or BM25 in ``mode="bm25"``). ``filters``: kinject's
``key=value`` filters (strings or a mapping), or LlamaIndex ``MetadataFilters`` on the same
keys (``kind``, ``lang``, ``source``, ``since``, ``until``, ``tag``). Needs
``llama-index-core`` (``pip install 'kinject[llamaindex]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilters,
    )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("kinject's LlamaIndex retriever needs llama-index-core: "
                      "pip install 'kinject[llamaindex]'") from exc

from kinject.index.filters import FILTER_KEYS
from kinject.integrations.http_client import KinjectClient, filter_params
from kinject.integrations.langchain import document_metadata

__all__ = ["KinjectLlamaRetriever", "kinject_filters"]

MODES = ("hybrid", "vector", "bm25")
# kinject's meta fields that say nothing to a reader or an embedder: kept in the node, out
# of the text LlamaIndex builds for prompts and embeddings.
LLM_HIDDEN = ["chunk_id", "ts", "unit"]


def kinject_filters(filters: Any) -> list[str]:
    """kinject's ``key=value`` filters from strings, a mapping or LlamaIndex
    ``MetadataFilters`` (AND of ``==`` on any kinject key, ``in`` on one that takes
    alternatives, ``all`` on ``tag``)."""
    if not isinstance(filters, MetadataFilters):
        return filter_params(filters)
    if filters.condition not in (None, FilterCondition.AND):
        raise ValueError(f"kinject combines filters with AND only, got {filters.condition}")
    out: list[str] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            raise ValueError("kinject takes no nested MetadataFilters")
        if f.key not in FILTER_KEYS:
            raise ValueError(f"kinject filters on {', '.join(FILTER_KEYS)}, not {f.key!r}")
        op = f.operator
        # Within a key, kinject's values are alternatives, except tags: all must be present.
        if op == FilterOperator.EQ or (op == FilterOperator.IN and f.key != "tag") or (
                op == FilterOperator.ALL and f.key == "tag"):
            values = f.value if isinstance(f.value, list) else [f.value]
            out += [f"{f.key}={v}" for v in values]
        else:
            raise ValueError(f"kinject cannot filter {f.key} {op.value} {f.value!r}: it takes "
                             f"==, 'in' (not on tag) and 'all' (on tag)")
    return out


def hit_node(chunk_id: str, source_id: str, text: str, score: float,
             meta: Mapping[str, Any]) -> NodeWithScore:
    metadata = {**document_metadata(chunk_id, meta), "source_id": source_id}
    hidden = [k for k in LLM_HIDDEN if k in metadata]
    node = TextNode(id_=chunk_id, text=text, metadata=metadata,
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=source_id)},
                    excluded_llm_metadata_keys=hidden, excluded_embed_metadata_keys=hidden)
    return NodeWithScore(node=node, score=float(score))


class KinjectLlamaRetriever(BaseRetriever):
    """kinject's search as a LlamaIndex retriever: over a local ``service`` (an open
    KinjectService) or a kinject running elsewhere (``base_url``, ``api_key`` when reads need
    a key). ``k`` hits, ``filters`` (see the module's docstring), ``mode``
    (hybrid|vector|bm25; default: the server's ``index.search_mode``)."""

    def __init__(self, service: Any = None, *, base_url: str | None = None,
                 api_key: str | None = None, k: int = 4, filters: Any = None,
                 mode: str | None = None, timeout_s: float = 30.0, **kwargs: Any) -> None:
        if (service is None) == (base_url is None):
            raise ValueError("KinjectLlamaRetriever needs either service= (an open "
                             "KinjectService) or base_url= (a running kinject), not both")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(**kwargs)
        self.service = service
        self.client = KinjectClient(base_url, api_key, timeout_s) if base_url else None
        self.k = k
        self.filters = kinject_filters(filters)  # checked now, not at the first query
        self.mode = mode

    def __repr__(self) -> str:  # never the key
        where = self.client.base_url if self.client is not None else "service"
        return f"KinjectLlamaRetriever({where!r}, k={self.k})"

    def _local(self, query: str) -> list[NodeWithScore]:
        hits = self.service.search(query, self.k, self.filters, self.mode)
        return [hit_node(h.chunk_id, h.source_id, h.text, h.score, h.meta) for h in hits]

    @staticmethod
    def _nodes(hits: list[dict[str, Any]]) -> list[NodeWithScore]:
        return [hit_node(h["chunk_id"], h["source_id"], h["text"], h["score"],
                         h.get("meta") or {}) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.client is not None:
            return self._nodes(self.client.search(query_bundle.query_str, self.k, self.filters,
                                                  self.mode))
        return self._local(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.client is not None:
            return self._nodes(await self.client.asearch(query_bundle.query_str, self.k,
                                                         self.filters, self.mode))
        return await asyncio.to_thread(self._local, query_bundle.query_str)
