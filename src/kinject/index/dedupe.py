"""Duplicate detection: exact (content hash) and near (MinHash LSH persisted in SQLite).

Near duplicates are texts whose shingle sets have a Jaccard similarity of at least
``threshold``: word 5-shingles for English, character 3-shingles (letters and digits only)
for Chinese and mixed text, all lower-cased, so spacing, case and punctuation never matter.
MinHash signatures (datasketch, fixed seed, so equal in every process) are the durable
state: one SQLite row per key, loaded back into the LSH when the index opens. With no path
the index lives in memory only; its owner persists the signatures (``signature``) and loads
them back (``add_signatures``), as the text index does inside its docstore transaction.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kinject.ingest.normalise import detect_lang
from kinject.types import content_hash

if TYPE_CHECKING:
    from datasketch import MinHash

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
_SCHEME = "affine32"  # datasketch's default; 32-bit hash values
_SIG_DTYPE = np.dtype("<u4")
_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS signatures (key TEXT PRIMARY KEY, source_id TEXT, signature BLOB);
CREATE INDEX IF NOT EXISTS signatures_by_source ON signatures(source_id);
"""


def shingles(text: str, lang: str | None = None, *, words: int = 5, chars: int = 3) -> set[str]:
    """Word shingles for English, character shingles for zh and mixed (none without letters)."""
    lang = lang or detect_lang(text)
    text = text.lower()
    if lang == "en":
        tokens, n, sep = _WORD.findall(text), words, " "
    else:
        tokens, n, sep = [c for c in text if c.isalnum()], chars, ""
    if len(tokens) <= n:
        return {sep.join(tokens)} if tokens else set()
    return {sep.join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with the most rows per band that still finds a pair at ``threshold``
    with probability >= ``recall``. datasketch's own choice for 0.9/128 (5 x 25) finds only
    31% of such pairs; extra candidates cost one vector comparison each to verify."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def signature_bytes(sig: np.ndarray) -> bytes:
    """A signature as stored: little-endian uint32 values."""
    return np.asarray(sig).astype(_SIG_DTYPE).tobytes()


def signature_from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=_SIG_DTYPE).astype(np.uint32)


class _Signed:
    """What MinHashLSH reads of a MinHash (its values, scheme and length), without the cost
    of building one for every insert and query."""

    __slots__ = ("hashvalues",)
    scheme = _SCHEME

    def __init__(self, hashvalues: np.ndarray) -> None:
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


class ExactDeduper:
    """First key seen for each exact text (by content hash); in memory, for one batch/process."""

    def __init__(self) -> None:
        self._by_hash: dict[str, str] = {}
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, key: str, text: str) -> str | None:
        """Register ``key``; returns the key already holding the same text, or None."""
        digest = content_hash(text)
        with self._lock:
            first = self._by_hash.setdefault(digest, key)
            self._by_key[key] = digest
        return None if first == key else first

    def remove(self, key: str) -> None:
        with self._lock:
            digest = self._by_key.pop(key, None)
            if digest is not None and self._by_hash.get(digest) == key:
                del self._by_hash[digest]

    def __len__(self) -> int:
        return len(self._by_key)


class NearDuplicateIndex:
    """MinHash LSH over shingles, persisted in a SQLite file, safe to share between threads.

    ``find`` returns the keys whose estimated Jaccard similarity with the text is at least
    ``threshold``. The signature parameters (``num_perm``, seed, shingle sizes) are stored in
    the file; opening it with others raises ValueError, as their signatures cannot compare.
    """

    def __init__(
        self,
        path: Path | None,
        threshold: float = 0.9,
        num_perm: int = 128,
        *,
        word_shingle: int = 5,
        char_shingle: int = 3,
        seed: int = 1,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if not 16 <= num_perm <= 1024:
            raise ValueError(f"num_perm must be in [16, 1024], got {num_perm!r}")
        if word_shingle < 1 or char_shingle < 1:
            raise ValueError(f"shingle sizes must be >= 1, got {word_shingle}, {char_shingle}")
        from datasketch import MinHash, MinHashLSH

        self.path = Path(path) if path is not None else None
        self.threshold, self.num_perm = threshold, num_perm
        self._words, self._chars, self._seed = word_shingle, char_shingle, seed
        self._minhash = MinHash
        self._perms = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations
        self._lsh = MinHashLSH(
            threshold=threshold, num_perm=num_perm, params=lsh_params(threshold, num_perm)
        )
        self._sigs: dict[str, np.ndarray] = {}
        self._source_of: dict[str, str | None] = {}
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._check_meta(self._db)
            self._load(self._db)

    @property
    def params(self) -> str:
        """What makes signatures comparable: equal params, comparable signatures."""
        return (f"num_perm={self.num_perm},seed={self._seed},scheme={_SCHEME},"
                f"words={self._words},chars={self._chars}")

    def _check_meta(self, db: sqlite3.Connection) -> None:
        shingling = f"words={self._words},chars={self._chars}"
        want = {"num_perm": str(self.num_perm), "seed": str(self._seed), "scheme": _SCHEME}
        want["shingles"] = shingling
        have = dict(db.execute("SELECT name, value FROM meta").fetchall())
        for name, value in want.items():
            if name in have and have[name] != value:
                raise ValueError(
                    f"{self.path} holds signatures made with {name}={have[name]}, "
                    f"not {value}; use those settings or a new file"
                )
        with db:
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", want.items())

    def _load(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT key, source_id, signature FROM signatures").fetchall()
        self._insert_fresh((key, signature_from_bytes(blob), src) for key, src, blob in rows)
        log.info("near-duplicate index %s: %d signatures loaded", self.path, len(rows))

    def _insert_fresh(self, items: Iterable[tuple[str, np.ndarray, str | None]]) -> int:
        """Bulk-insert keys not yet held (one LSH insertion session)."""
        n = 0
        with self._lock, self._lsh.insertion_session() as session:
            for key, sig, src in items:
                if key in self._sigs:
                    continue
                self._sigs[key], self._source_of[key] = sig, src
                session.insert(key, _Signed(sig), check_duplication=False)
                n += 1
        return n

    def _as_minhash(self, sig: np.ndarray | None = None) -> MinHash:
        """A MinHash holding ``sig`` (an empty one for None), sharing the permutations."""
        return self._minhash(
            num_perm=self.num_perm, seed=self._seed, hashvalues=sig, permutations=self._perms,
            scheme=_SCHEME,
        )  # fmt: skip

    def signature(self, text: str, lang: str | None = None) -> np.ndarray | None:
        """The MinHash signature of ``text`` (None when it has no letters or digits)."""
        grams = shingles(text, lang, words=self._words, chars=self._chars)
        if not grams:
            return None
        m = self._as_minhash()
        m.update_batch([g.encode("utf-8") for g in grams])
        return np.asarray(m.hashvalues, dtype=np.uint32)

    def find(self, text: str, lang: str | None = None) -> list[str]:
        """Keys of stored texts near-duplicating ``text``, most similar first."""
        sig = self.signature(text, lang)
        return [] if sig is None else [k for k, _ in self.find_signature(sig)]

    def find_signature(self, sig: np.ndarray) -> list[tuple[str, float]]:
        """(key, estimated Jaccard) of stored texts at or above the threshold, most similar
        first (ties by key, so every process orders them alike)."""
        with self._lock:
            if not self._sigs:
                return []
            candidates = self._lsh.query(_Signed(sig))
            scored = [(float(np.mean(self._sigs[k] == sig)), k) for k in candidates]
        return [(k, s) for s, k in sorted(scored, key=lambda p: (-p[0], p[1]))
                if s >= self.threshold]

    def add(
        self, key: str, text: str, source_id: str | None = None, lang: str | None = None
    ) -> bool:
        """Store ``text`` under ``key``, replacing what it held; False if it has no words.
        ``source_id`` lets ``remove_source`` forget every key of a deleted source."""
        return self.add_many([(key, text, source_id)], lang) == 1

    def add_many(
        self, items: Iterable[tuple[str, str, str | None]], lang: str | None = None
    ) -> int:
        """Store (key, text, source_id) triples in one transaction; returns how many stored.

        A key given a text without letters or digits forgets what it held."""
        signed = [(k, src, self.signature(t, lang)) for k, t, src in items]
        with self._lock:
            self.remove_many(k for k, _, sig in signed if sig is None)
            return self.add_signatures(
                (k, sig, src) for k, src, sig in signed if sig is not None)

    def add_signatures(self, items: Iterable[tuple[str, np.ndarray, str | None]]) -> int:
        """Store precomputed (key, signature, source_id) triples, replacing what a key held."""
        rows = [(k, np.asarray(sig, dtype=np.uint32), src) for k, sig, src in items]
        with self._lock:
            if self._db is not None:
                with self._db:  # durable first: memory never holds what the file lacks
                    self._db.executemany(
                        "INSERT OR REPLACE INTO signatures VALUES (?, ?, ?)",
                        [(k, src, signature_bytes(sig)) for k, sig, src in rows],
                    )
            for key, sig, src in rows:
                if self._sigs.pop(key, None) is not None:
                    self._lsh.remove(key)
                self._sigs[key], self._source_of[key] = sig, src
                self._lsh.insert(key, _Signed(sig), check_duplication=False)
        return len(rows)

    def load_signatures(self, items: Iterable[tuple[str, np.ndarray, str | None]]) -> int:
        """Bulk-load (key, signature, source_id) triples into memory only (an owner that
        persists the signatures itself reloads them here); keys already held are skipped."""
        return self._insert_fresh(items)

    def remove(self, key: str) -> bool:
        """Forget ``key``; False if it was not there."""
        return self.remove_many([key]) == 1

    def remove_many(self, keys: Iterable[str]) -> int:
        with self._lock:
            gone = [k for k in dict.fromkeys(keys) if k in self._sigs]
            if self._db is not None:
                with self._db:
                    self._db.executemany("DELETE FROM signatures WHERE key = ?",
                                         [(k,) for k in gone])
            for key in gone:
                del self._sigs[key]
                self._source_of.pop(key, None)
                self._lsh.remove(key)
        return len(gone)

    def remove_source(self, source_id: str) -> list[str]:
        """Forget every key added with ``source_id`` (a deleted source); returns those keys."""
        with self._lock:
            keys = sorted(k for k, src in self._source_of.items() if src == source_id)
            self.remove_many(keys)
        return keys

    def __contains__(self, key: object) -> bool:
        return key in self._sigs

    def __len__(self) -> int:
        return len(self._sigs)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    def __enter__(self) -> NearDuplicateIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
