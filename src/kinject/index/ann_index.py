"""One vector space in FAISS: exact while small, HNSW past a size, rebuilt in the background.

Vectors sit behind ``IndexIDMap2`` keyed by docstore row ids, inner product on unit vectors
(cosine). Below ``hnsw_threshold`` vectors the index is an exact ``IndexFlatIP`` (upserts and
deletes applied in place). Once the space reaches the threshold, a background thread builds
an ``IndexHNSWFlat`` from the docstore's vectors while searches go on against the exact index;
changes made meanwhile are journalled and replayed onto the new index, which is then swapped
in (one reference assignment under the lock). HNSW cannot remove vectors, so deletes are
masked (an ``IDSelector`` excludes them from every search) until masked rows pass a share of
the index, which triggers another background rebuild. Row ids are never reused (SQLite
AUTOINCREMENT), so a masked id never comes back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kinject.index.rebuild import BackgroundRebuild

log = logging.getLogger(__name__)

Loader = Callable[[], tuple[np.ndarray, np.ndarray]]


def _faiss() -> Any:
    import faiss

    return faiss


@contextmanager
def _one_thread(faiss: Any) -> Iterator[None]:
    """Run a FAISS call on one OpenMP thread, then give the calling thread its count back.

    A server runs many small searches at once; FAISS's threads spin-wait for each other on a
    busy machine, so a search of 40 vectors took 15 ms with 2 threads and 0.12 ms with one (a
    20k exact search: 56 ms vs 9 ms). The count is per thread and shared with torch (same
    OpenMP runtime): setting it for good would also slow the generation that follows a
    search in the same thread, hence the restore.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclass(frozen=True)
class AnnConfig:
    """When and how a space turns into HNSW."""

    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    # Masked (deleted) vectors past this share of an HNSW index trigger a rebuild.
    rebuild_share: float = 0.1

    def __post_init__(self) -> None:
        if self.hnsw_threshold < 1:
            raise ValueError(f"hnsw_threshold must be >= 1, got {self.hnsw_threshold}")
        if self.hnsw_m < 4:
            raise ValueError(f"hnsw_m must be >= 4, got {self.hnsw_m}")
        if self.ef_construction < 8 or self.ef_search < 8:
            raise ValueError(f"ef_construction and ef_search must be >= 8, got "
                             f"{self.ef_construction}, {self.ef_search}")
        if not 0.0 < self.rebuild_share <= 1.0:
            raise ValueError(f"rebuild_share must be in (0, 1], got {self.rebuild_share}")


class AnnIndex:
    """Search one vector space; thread-safe; searches never wait for a rebuild."""

    def __init__(self, dim: int, config: AnnConfig | None = None, loader: Loader | None = None
                 ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.config = config or AnnConfig()
        self.loader = loader
        self._lock = threading.RLock()
        self._index: Any = self._flat()
        self._hnsw = False
        self._ids: set[int] = set()
        self._masked: set[int] = set()
        self._selector: Any = None
        self._rebuild = BackgroundRebuild(self._lock, name="kinject-ann-rebuild",
                                          what="vector index", logger=log,
                                          build=self._build_fresh, install=self._install_fresh)
        self.builds = 0

    # -- construction -------------------------------------------------------------------------
    def _flat(self) -> Any:
        faiss = _faiss()

        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_hnsw(self) -> Any:
        faiss = _faiss()

        inner = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.config.ef_construction
        return faiss.IndexIDMap2(inner)

    def _new_index(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[Any, bool]:
        """An index holding ``vecs`` under ``ids``, and whether it is HNSW (past the threshold)."""
        hnsw = len(ids) >= self.config.hnsw_threshold
        index = self._new_hnsw() if hnsw else self._flat()
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32),
                               np.asarray(ids, dtype=np.int64))
        return index, hnsw

    def _install_locked(self, index: Any, hnsw: bool, ids: np.ndarray) -> None:
        self._index, self._hnsw = index, hnsw
        self._ids = {int(i) for i in np.asarray(ids).tolist()}
        self._masked, self._selector = set(), None

    @property
    def kind(self) -> str:
        return "hnsw" if self._hnsw else "flat"

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        ids_arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                             dtype=np.int64)
        if len(ids_arr) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) != len(ids_arr):
            raise ValueError(
                f"expected {len(ids_arr)} vectors of dim {self.dim}, got shape {vecs.shape}")
        with self._lock:
            self._rebuild.record(lambda: self._upsert_locked(ids_arr, vecs))
            self._upsert_locked(ids_arr, vecs)
        self._maybe_rebuild()

    def _upsert_locked(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if self._hnsw:
            # Rows never change their vector; HNSW cannot replace one anyway.
            new = np.array([i not in self._ids for i in ids.tolist()], dtype=bool)
            ids, vecs = ids[new], vecs[new]
            if len(ids) == 0:
                return
        else:
            self._index.remove_ids(ids)  # an upsert replaces, never duplicates
        self._index.add_with_ids(vecs, ids)
        self._ids.update(ids.tolist())

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        ids_arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                             dtype=np.int64)
        if len(ids_arr) == 0:
            return 0
        with self._lock:
            self._rebuild.record(lambda: self._remove_locked(ids_arr))
            n = self._remove_locked(ids_arr)
        self._maybe_rebuild()
        return n

    def _remove_locked(self, ids: np.ndarray) -> int:
        present = [i for i in ids.tolist() if i in self._ids]
        if not present:
            return 0
        self._ids.difference_update(present)
        if self._hnsw:
            self._masked.update(present)
            self._selector = None
        else:
            self._index.remove_ids(np.asarray(present, dtype=np.int64))
        return len(present)

    # -- rebuilds -----------------------------------------------------------------------------
    def _due(self) -> bool:
        with self._lock:
            if not self._hnsw:
                return len(self._ids) >= self.config.hnsw_threshold
            return len(self._masked) > self.config.rebuild_share * max(len(self._ids), 1)

    def _maybe_rebuild(self) -> None:
        if self.loader is not None and self._due():
            self.rebuild_async()

    @property
    def rebuilding(self) -> bool:
        return self._rebuild.running

    def rebuild_async(self) -> threading.Thread | None:
        """Build a fresh index from the loader in a background thread (unless one runs)."""
        if self.loader is None:
            raise RuntimeError("AnnIndex has no loader to rebuild from")
        return self._rebuild.start()

    def wait(self, timeout: float | None = None) -> None:
        self._rebuild.wait(timeout)

    def _build_fresh(self) -> tuple[Any, bool, np.ndarray]:
        assert self.loader is not None
        ids, vecs = self.loader()
        return (*self._new_index(ids, vecs), ids)

    def _install_fresh(self, built: tuple[Any, bool, np.ndarray]) -> str:
        index, hnsw, ids = built
        self._install_locked(index, hnsw, ids)
        self.builds += 1
        return f"built a {self.kind} index of {len(ids)} vectors"

    def reset(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Replace the contents synchronously (on open); HNSW when past the threshold."""
        index, hnsw = self._new_index(ids, vecs)
        with self._lock:
            self._install_locked(index, hnsw, ids)

    # -- reads --------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: Iterable[int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, <=k); missing slots have id -1.

        ``allowed`` restricts the search to those ids (FAISS ID selector).
        """
        faiss = _faiss()

        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            n = len(self._ids)
            if n == 0 or k <= 0:
                return (np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64))
            sel = None
            if allowed is not None:
                keep = np.asarray([i for i in allowed if i in self._ids], dtype=np.int64)
                if len(keep) == 0:
                    return (np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64))
                sel = faiss.IDSelectorBatch(keep)
                n = len(keep)
            elif self._masked:
                if self._selector is None:
                    masked = np.asarray(sorted(self._masked), dtype=np.int64)
                    self._selector = (faiss.IDSelectorNot(faiss.IDSelectorBatch(masked)),
                                      masked)
                sel = self._selector[0]
            kk = min(k, n)
            extra: dict[str, Any] = {"sel": sel} if sel is not None else {}
            if self._hnsw:
                params: Any = faiss.SearchParametersHNSW(
                    efSearch=max(self.config.ef_search, kk), **extra)
            else:
                params = faiss.SearchParameters(**extra) if extra else None
            with _one_thread(faiss):
                scores, ids = self._index.search(q, kk, params=params)
        return scores, ids

    def reconstruct(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors of the ids present (for scoring hits found by other retrievers)."""
        out = {}
        with self._lock:
            for i in ids:
                if i in self._ids:
                    out[int(i)] = self._index.reconstruct(int(i))
        return out

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)

    # -- persistence --------------------------------------------------------------------------
    def freeze(self, meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A copy of the index and its meta, taken under the lock (cheap: a memory copy), for
        :meth:`write` to save outside it."""
        faiss = _faiss()

        with self._lock:
            body = {**meta, "kind": self.kind, "dim": self.dim, "count": len(self._ids),
                    "masked": sorted(self._masked)}
            return faiss.clone_index(self._index), body

    @staticmethod
    def write(path: Path, frozen: tuple[Any, dict[str, Any]]) -> None:
        """Save a frozen copy atomically: temp file + rename, the meta file replaced last, so
        it never names an index it does not describe."""
        faiss = _faiss()

        index, body = frozen
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        meta_path = path.with_name(path.name + ".json")
        mtmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
        mtmp.write_text(json.dumps(body))
        os.replace(mtmp, meta_path)

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        self.write(path, self.freeze(meta))

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.with_name(path.name + ".json").read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def load(self, path: Path) -> dict[str, Any] | None:
        """Load a saved index; return its meta, or None when there is none usable."""
        faiss = _faiss()

        meta = self.read_meta(path)
        if meta is None or meta.get("dim") != self.dim:
            return None
        try:
            index = faiss.read_index(str(path))
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        except (OSError, RuntimeError) as exc:
            log.warning("cannot read the vector index %s (%s): rebuilding", path, exc)
            return None
        masked = {int(i) for i in meta.get("masked", [])}
        with self._lock:
            self._index = index
            self._hnsw = meta.get("kind") == "hnsw"
            self._ids = {int(i) for i in ids.tolist()} - masked
            self._masked = masked if self._hnsw else set()
            self._selector = None
        return meta
