"""Embedders both ways between LangChain and kinject: a LangChain ``Embeddings`` as a kinject
:class:`~kinject.index.embedders.Embedder`, and the index's own embedder as LangChain sees
it. Needs ``langchain-core``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from langchain_core.embeddings import Embeddings

from kinject.index.embedders import Embedder, l2_normalise


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


def _same_embedder(embedding: Embeddings, embedder: Embedder) -> bool:
    """Whether ``embedding`` is the index's own embedder (as LangChain sees it)."""
    if isinstance(embedding, _IndexEmbeddings):
        return embedding.embedder is embedder
    return isinstance(embedder, LangChainEmbedder) and embedder.embeddings is embedding
