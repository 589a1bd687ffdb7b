"""kinject hits and chunks as LangChain documents, and the search arguments and ids the
LangChain classes (local and remote) share. Needs ``langchain-core``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.documents import Document

from kinject.types import Chunk, Hit

# The chunk-meta key that holds a LangChain document's metadata exactly as given (kinject adds
# its own fields beside it: unit, title, ts, ...; search adds its scores).
LC_METADATA = "langchain_metadata"
# What search adds to a hit's meta (index/text_search.py): never part of a document's metadata.
SEARCH_FIELDS = frozenset({"fused", "vector_score", "bm25_score", "space", "score"})
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
