"""BM25 over the docstore's chunks (bm25s), Chinese segmented with jieba.

bm25s builds an immutable index, so this keeps three parts:

- the *base*: a bm25s index over the chunks as of its last build (rows = docstore row ids);
- the *delta*: chunks added since, in a small inverted index scored by the same Lucene
  BM25 formula with the base's statistics (plus the delta's), so a new chunk is findable
  the moment it is applied;
- the *deleted* set: base rows removed since, masked out of every result.

When the delta or the deleted set grows past a share of the base, a background thread
rebuilds the base from the docstore while searches go on against the old one; changes
made during the rebuild are journalled and replayed onto the new base before it is
swapped in (one reference assignment under a lock). ``save`` persists the base (bm25s
files in a versioned folder, named by a pointer file replaced atomically); ``load``
reconciles it with the docstore (rows missing -> delta, rows gone -> deleted).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kinject.index.bm25_tokens import TOKENIZER_VERSION, tokenize
from kinject.index.rebuild import BackgroundRebuild

log = logging.getLogger(__name__)

# Lucene BM25, as bm25s computes it by default.
K1 = 1.5
B = 0.75

@dataclass
class _Base:
    """An immutable bm25s index and the statistics the delta is scored with."""

    retriever: Any = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    df: dict[str, int] = field(default_factory=dict)
    total_len: int = 0

    @property
    def size(self) -> int:
        return len(self.rows)


def _build(rows: Sequence[int], tokens: Sequence[list[str]]) -> _Base:
    base = _Base(rows=np.asarray(rows, dtype=np.int64))
    df: Counter[str] = Counter()
    for toks in tokens:
        df.update(set(toks))
        base.total_len += len(toks)
    base.df = dict(df)
    if len(rows):
        import bm25s

        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index([list(t) for t in tokens], show_progress=False)
        base.retriever = retriever
    return base


class Bm25Index:
    """BM25 search over docstore rows; thread-safe, never blocks a search on a rebuild."""

    def __init__(self, *, rebuild_min: int = 256, rebuild_share: float = 0.1,
                 rebuild_max: int = 2000) -> None:
        if rebuild_min < 1:
            raise ValueError(f"rebuild_min must be >= 1, got {rebuild_min}")
        if rebuild_max < rebuild_min:
            raise ValueError(f"rebuild_max must be >= rebuild_min ({rebuild_min}), got "
                             f"{rebuild_max}")
        if not 0.0 < rebuild_share <= 1.0:
            raise ValueError(f"rebuild_share must be in (0, 1], got {rebuild_share}")
        self.rebuild_min = rebuild_min
        self.rebuild_share = rebuild_share
        # The delta is scored in Python on every search: past this many pending changes a
        # rebuild is due whatever the base's size, so a search's cost stays bounded.
        self.rebuild_max = rebuild_max
        self._lock = threading.RLock()
        self._base = _Base()
        self._pos: dict[int, int] = {}  # base row -> position in the base
        self._deleted: set[int] = set()
        self._mask = np.zeros(0, dtype=bool)  # base positions deleted
        self._delta: dict[int, Counter[str]] = {}
        self._delta_dl: dict[int, int] = {}  # delta row -> its length in tokens
        self._delta_len = 0  # their sum
        self._postings: dict[str, set[int]] = {}
        # Every live row's tokens, so a rebuild tokenises only what it has never seen.
        self._tokens: dict[int, list[str]] = {}
        self._rebuild = BackgroundRebuild(self._lock, name="kinject-bm25-rebuild", what="BM25",
                                          logger=log, build=self._build_fresh,
                                          install=self._install_fresh)
        self._loader: Callable[[], tuple[list[int], list[str]]] | None = None
        self.builds = 0

    # -- state --------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return self._base.size - len(self._deleted) + len(self._delta)

    @property
    def pending(self) -> int:
        """Changes not yet folded into the base (delta chunks + masked deletes)."""
        with self._lock:
            return len(self._delta) + len(self._deleted)

    def set_loader(self, loader: Callable[[], tuple[list[int], list[str]]]) -> None:
        """Where background rebuilds read (rows, texts) from: the docstore."""
        self._loader = loader

    def _install(self, base: _Base) -> None:
        self._base = base
        self._pos = {int(r): i for i, r in enumerate(base.rows)}
        self._deleted = set()
        self._mask = np.zeros(base.size, dtype=bool)
        self._delta = {}
        self._delta_dl = {}
        self._delta_len = 0
        self._postings = {}
        self.builds += 1

    # -- writes -------------------------------------------------------------------------------
    def add(self, rows: Sequence[int], texts: Sequence[str] | None = None,
            tokens: Sequence[list[str]] | None = None) -> None:
        toks = list(tokens) if tokens is not None else [tokenize(t) for t in texts or ()]
        rows = [int(r) for r in rows]
        with self._lock:
            self._rebuild.record(lambda: self._add_locked(rows, toks))
            self._add_locked(rows, toks)
        self._maybe_rebuild()

    def _add_locked(self, rows: list[int], toks: list[list[str]]) -> None:
        for row, t in zip(rows, toks, strict=True):
            if (row in self._pos and row not in self._deleted) or row in self._delta:
                continue  # the same chunk again: rows never change text
            self._tokens[row] = t
            counts = Counter(t)
            self._delta[row] = counts
            self._delta_dl[row] = len(t)
            self._delta_len += len(t)
            for tok in counts:
                self._postings.setdefault(tok, set()).add(row)

    def remove(self, rows: Iterable[int]) -> None:
        rows = [int(r) for r in rows]
        if not rows:
            return
        with self._lock:
            self._rebuild.record(lambda: self._remove_locked(rows))
            self._remove_locked(rows)
        self._maybe_rebuild()

    def _remove_locked(self, rows: list[int]) -> None:
        for row in rows:
            self._tokens.pop(row, None)
            counts = self._delta.pop(row, None)
            if counts is not None:
                self._delta_len -= self._delta_dl.pop(row, 0)
                for tok in counts:
                    posting = self._postings.get(tok)
                    if posting is not None:
                        posting.discard(row)
                        if not posting:
                            del self._postings[tok]
            pos = self._pos.get(row)
            if pos is not None:
                self._deleted.add(row)
                self._mask[pos] = True

    def reset(self, rows: Sequence[int], texts: Sequence[str]) -> None:
        """Rebuild synchronously from ``rows`` and ``texts`` (used when nothing was saved)."""
        toks = [tokenize(t) for t in texts]
        built = _build(rows, toks), {int(r): t for r, t in zip(rows, toks, strict=True)}
        with self._lock:
            self._install_fresh(built)

    # -- rebuilds -----------------------------------------------------------------------------
    def _due(self) -> bool:
        share = int(self.rebuild_share * self._base.size)
        return self.pending >= max(self.rebuild_min, min(share, self.rebuild_max))

    def _maybe_rebuild(self) -> None:
        if self._loader is not None and self._due():
            self.rebuild_async()

    def rebuild_async(self) -> threading.Thread | None:
        """Start a background rebuild from the loader unless one is running."""
        if self._loader is None:
            raise RuntimeError("Bm25Index has no loader; call set_loader() first")
        return self._rebuild.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running background rebuild (tests, shutdown)."""
        self._rebuild.wait(timeout)

    def _build_fresh(self) -> tuple[_Base, dict[int, list[str]]]:
        assert self._loader is not None
        rows, texts = self._loader()
        with self._lock:
            known = self._tokens.copy()
        toks = [known.get(int(r)) or tokenize(t) for r, t in zip(rows, texts, strict=True)]
        return _build(rows, toks), {int(r): t for r, t in zip(rows, toks, strict=True)}

    def _install_fresh(self, built: tuple[_Base, dict[int, list[str]]]) -> str:
        base, tokens = built
        self._install(base)
        self._tokens = tokens
        return f"rebuilt BM25 over {base.size} chunks"

    # -- reads --------------------------------------------------------------------------------
    def search(self, query: str, k: int, allowed: Iterable[int] | None = None
               ) -> list[tuple[int, float]]:
        """(row, score) of the ``k`` best rows, scores > 0; only ``allowed`` rows if given."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = tokenize(query)
        if not q:
            return []
        allow = None if allowed is None else {int(r) for r in allowed}
        with self._lock:
            base, mask, delta, postings = self._base, self._mask, self._delta, self._postings
            delta_dl = self._delta_dl
            deleted = len(self._deleted)
            found: list[tuple[int, float]] = []
            n_docs = base.size - deleted + len(delta)
            if n_docs <= 0:
                return []
            avgdl = max((base.total_len + self._delta_len) / max(base.size + len(delta), 1),
                        1e-9)
            if base.retriever is not None:
                known = [t for t in q if t in base.retriever.vocab_dict]
                if known:
                    scores = base.retriever.get_scores(known)
                    scores[mask] = 0.0
                    if allow is not None:
                        keep = np.zeros(base.size, dtype=bool)
                        idx = [self._pos[r] for r in allow if r in self._pos]
                        keep[idx] = True
                        scores = np.where(keep, scores, 0.0)
                    found += _top(base.rows, scores, k)
            if delta:
                found += self._score_delta(q, base, postings, delta, delta_dl, avgdl, allow)
        found.sort(key=lambda rs: -rs[1])
        return found[:k]

    @staticmethod
    def _score_delta(q: list[str], base: _Base, postings: dict[str, set[int]],
                     delta: dict[int, Counter[str]], delta_dl: dict[int, int], avgdl: float,
                     allow: set[int] | None) -> list[tuple[int, float]]:
        n = base.size + len(delta)
        scores: dict[int, float] = {}
        norm = K1 * (1 - B)
        per_token = K1 * B / avgdl
        for tok in q:
            rows = postings.get(tok)
            if not rows:
                continue
            df = base.df.get(tok, 0) + len(rows)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            if allow is not None:
                rows = rows & allow
            for row in rows:
                tf = delta[row][tok]
                scores[row] = scores.get(row, 0.0) + idf * tf / (
                    tf + norm + per_token * delta_dl[row])
        return list(scores.items())

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path, generation: int) -> None:
        """Persist the base (not the delta: ``load`` recovers it from the docstore)."""
        with self._lock:
            base = self._base
        directory.mkdir(parents=True, exist_ok=True)
        pointer = directory / "bm25.json"
        folder = directory / f"bm25-{generation}-{os.getpid()}-{self.builds}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        if base.retriever is not None:
            base.retriever.save(str(folder / "bm25s"))
        np.save(folder / "rows.npy", base.rows)
        (folder / "stats.json").write_text(
            json.dumps({"df": base.df, "total_len": base.total_len}, ensure_ascii=False))
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(json.dumps({"folder": folder.name, "generation": generation,
                                   "tokenizer": TOKENIZER_VERSION}))
        os.replace(tmp, pointer)
        for old in directory.glob("bm25-*"):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, directory: Path) -> bool:
        """Load a saved base; False when there is none, it is unreadable or its tokens are
        of another :data:`TOKENIZER_VERSION` (the caller rebuilds it from the docstore)."""
        try:
            meta = json.loads((directory / "bm25.json").read_text())
            if meta.get("tokenizer", 1) != TOKENIZER_VERSION:
                log.info("the BM25 snapshot in %s was tokenised by version %s, not %s: "
                         "rebuilding", directory, meta.get("tokenizer", 1), TOKENIZER_VERSION)
                return False
            folder = directory / str(meta["folder"])
            rows = np.load(folder / "rows.npy")
            stats = json.loads((folder / "stats.json").read_text())
            retriever = None
            if len(rows):
                import bm25s

                retriever = bm25s.BM25.load(str(folder / "bm25s"))
        except (OSError, ValueError, KeyError) as exc:
            log.info("no usable BM25 snapshot in %s (%s): rebuilding", directory, exc)
            return False
        base = _Base(retriever=retriever, rows=rows.astype(np.int64),
                     df={str(k): int(v) for k, v in stats["df"].items()},
                     total_len=int(stats["total_len"]))
        with self._lock:
            self._install(base)
        return True

    def base_rows(self) -> np.ndarray:
        with self._lock:
            return self._base.rows.copy()


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    if positive.size > k:
        part = np.argpartition(-scores[positive], k - 1)[:k]
        positive = positive[part]
    return [(int(rows[i]), float(scores[i])) for i in positive]
