"""Dense vectors in FAISS behind IndexIDMap2, keyed by the docstore's row ids.

Inner product on L2-normalised vectors (cosine). Saved atomically: written to a temp file
and renamed, so a crash at any moment leaves the previous or the new file, never half.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np


class FaissIndex:
    """Exact inner-product search with stable integer ids."""

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        import faiss

        self.dim = dim
        self._lock = threading.RLock()
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        ids_arr = np.asarray(ids, dtype=np.int64)
        if len(ids_arr) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) != len(ids_arr):
            raise ValueError(
                f"expected {len(ids_arr)} vectors of dim {self.dim}, got shape {vecs.shape}"
            )
        with self._lock:
            self._index.remove_ids(ids_arr)  # an upsert replaces, never duplicates
            self._index.add_with_ids(vecs, ids_arr)

    def remove(self, ids: list[int] | np.ndarray) -> int:
        ids_arr = np.asarray(ids, dtype=np.int64)
        if len(ids_arr) == 0:
            return 0
        with self._lock:
            return int(self._index.remove_ids(ids_arr))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores, ids), each (n_queries, k); missing slots have id -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if self._index.ntotal == 0:
                return (np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64))
            scores, ids = self._index.search(q, min(k, int(self._index.ntotal)))
        return scores, ids

    def ids(self) -> np.ndarray:
        import faiss

        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, path: Path) -> None:
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with self._lock:
            faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        import faiss

        index = faiss.read_index(str(path))
        self = cls.__new__(cls)
        self.dim = int(index.d)
        self._lock = threading.RLock()
        self._index = index
        return self
