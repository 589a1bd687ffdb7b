"""Which stored chunks search shows: one of each group of duplicates, the newest of rows
that contradict each other.

Every chunk stays in the docstore; a hidden one is only kept out of the search indexes.
A chunk is hidden when

- it is an exact (content hash of the case-folded, space-collapsed text) or near duplicate
  (MinHash LSH, estimated Jaccard >= ``threshold`` over word 3-shingles, character
  3-shingles for Chinese) of a visible chunk of *another* source: the ``duplicates``
  table marks it ``near_duplicate_of`` that chunk, the canonical one, which search returns;
- or a newer record of another source gives a different value for the same entity and
  field (:mod:`kinject.index.conflicts`): it is ``superseded``.

Why here, in the replica's apply path, and not in the ingest workers: workers are
stateless and scale out, and none of them sees the chunks the others made; the index
replica holds every chunk, applies them in one ordered, transactional path, and is the
place that deletes reach. The decisions are written in the same SQLite transaction as the
chunks (so a crash leaves both or neither), MinHash signatures are stored beside them and
loaded back into the in-memory LSH when the index opens, and a delete re-examines what it
touched: when a canonical chunk's source is deleted, its duplicates are examined again and
the first becomes visible; when the newer of two conflicting sources goes, the older one
shows again.

Replicas read the partitions of ``kinject.chunks`` in their own interleaving, so two
replicas may pick different members of a duplicate group as canonical; each shows exactly
one. Conflicts are decided by record timestamps, identically everywhere.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kinject.index.changes import SourceUpdate
from kinject.index.conflicts import SCHEMA as CONFLICT_SCHEMA
from kinject.index.conflicts import ConflictTracker
from kinject.index.dedupe import NearDuplicateIndex, signature_bytes, signature_from_bytes
from kinject.index.docstore import Docstore
from kinject.types import Chunk, content_hash

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_signatures (
    chunk_id    TEXT PRIMARY KEY,
    source_id   TEXT NOT NULL,
    digest      TEXT NOT NULL,
    signature   BLOB
);
CREATE INDEX IF NOT EXISTS chunk_signatures_source ON chunk_signatures(source_id);
CREATE INDEX IF NOT EXISTS chunk_signatures_digest ON chunk_signatures(digest);
CREATE TABLE IF NOT EXISTS duplicates (
    chunk_id          TEXT PRIMARY KEY,
    near_duplicate_of TEXT NOT NULL,
    similarity        REAL NOT NULL,
    exact             INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS duplicates_canonical ON duplicates(near_duplicate_of);
"""
# Word 3-shingles: chunks are a few hundred characters, and 5-shingles would let one
# changed word break too large a share of them.
WORD_SHINGLE = 3
CHAR_SHINGLE = 3
NUM_PERM = 128

_HIDDEN = "SELECT chunk_id FROM duplicates UNION SELECT chunk_id FROM superseded"
# For a query over ``chunks``: whether that row is hidden (two primary-key lookups).
_IS_HIDDEN = ("(EXISTS (SELECT 1 FROM duplicates d WHERE d.chunk_id = chunks.chunk_id) OR "
              "EXISTS (SELECT 1 FROM superseded s WHERE s.chunk_id = chunks.chunk_id))")


def _statements(schema: str) -> list[str]:
    return [s.strip() for s in schema.split(";") if s.strip()]


def _exact_digest(text: str) -> str:
    return content_hash(" ".join(text.split()).casefold())


@dataclass
class VisibilityChange:
    """What a batch changes in the search indexes beyond its own chunks."""

    # Rows that must not be searchable (hidden chunks of the batch's sources, and chunks
    # elsewhere that the batch hid).
    hide: set[int] = field(default_factory=set)
    # Rows outside the batch's sources that are visible now (with their vectors).
    show: list[int] = field(default_factory=list)
    show_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # Visible rows of the batch's sources.
    visible: set[int] = field(default_factory=set)


class ChunkVisibility:
    """Decides and records which chunks are hidden; see the module docstring.

    ``threshold=None`` turns duplicate detection off (conflicts are still resolved).
    """

    def __init__(self, threshold: float | None = 0.9) -> None:
        if threshold is not None and not 0.5 <= threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in [0.5, 1] or None, "
                             f"got {threshold!r}")
        self.threshold = threshold
        self._near: NearDuplicateIndex | None = None
        self._stale: list[str] = []  # keys to drop from the LSH once their removal committed
        # Row ids of the hidden chunks, as committed (searches skip them).
        self.hidden: set[int] = set()

    @property
    def _params(self) -> str:
        if self._near is None:
            return "off"
        return f"threshold={self.threshold},{self._near.params}"

    # -- lifecycle --------------------------------------------------------------------------
    def open(self, db: sqlite3.Connection) -> bool:
        """Create the tables, load the signatures and examine chunks stored before this
        existed (or with other settings). Call inside a docstore transaction; returns True
        when what search may show changed (the caller bumps the generation)."""
        for stmt in _statements(SCHEMA) + _statements(CONFLICT_SCHEMA):
            db.execute(stmt)
        if self.threshold is not None:
            self._near = NearDuplicateIndex(None, self.threshold, NUM_PERM,
                                            word_shingle=WORD_SHINGLE, char_shingle=CHAR_SHINGLE)
        row = db.execute("SELECT value FROM state WHERE key='visibility_params'").fetchone()
        changed = False
        if row is not None and row[0] != self._params:
            log.info("duplicate settings changed (%s -> %s): examining every chunk again",
                     row[0], self._params)
            db.execute("DELETE FROM chunk_signatures")
            changed = bool(db.execute("DELETE FROM duplicates").rowcount)
        db.execute("INSERT OR REPLACE INTO state(key, value) VALUES ('visibility_params', ?)",
                   (self._params,))
        if self._near is not None:
            self._near.load_signatures(
                (cid, signature_from_bytes(blob), sid) for cid, sid, blob in db.execute(
                    "SELECT chunk_id, source_id, signature FROM chunk_signatures "
                    "WHERE signature IS NOT NULL"))
        missing = db.execute(
            "SELECT row_id, chunk_id, doc_id, source_id, ordinal, text, lang, kind, meta "
            "FROM chunks WHERE chunk_id NOT IN (SELECT chunk_id FROM chunk_signatures) "
            "ORDER BY row_id").fetchall()
        if missing:
            log.info("examining %d stored chunk(s) for duplicates and conflicts", len(missing))
            before = self._hidden_count(db)
            new = [(int(r[0]), Chunk(r[1], r[2], r[3], r[5], int(r[4]), r[6], r[7],
                                     json.loads(r[8]))) for r in missing]
            entities: set[str] = set()
            for sid in dict.fromkeys(c.source_id for _, c in new):
                at = db.execute("SELECT MAX(at) FROM lineage WHERE source_id=?",
                                (sid,)).fetchone()[0]
                entities |= ConflictTracker.add(
                    db, [c for _, c in new if c.source_id == sid], float(at or time.time()))
            ConflictTracker.resolve(db, entities)
            for _, chunk in new:
                self._examine(db, chunk, None)
            changed = changed or self._hidden_count(db) != before
        self.hidden = self.hidden_rows(db)
        return changed

    def commit(self, change: VisibilityChange) -> None:
        """The transaction that ``change`` came from has committed: searches follow it."""
        self.hidden -= change.visible
        self.hidden -= set(change.show)
        self.hidden |= change.hide

    def close(self) -> None:
        if self._near is not None:
            self._near.close()
            self._near = None

    # -- reads ------------------------------------------------------------------------------
    @staticmethod
    def hidden_rows(db: sqlite3.Connection) -> set[int]:
        """Row ids of every hidden chunk."""
        return {int(r) for (r,) in db.execute(
            f"SELECT c.row_id FROM chunks c JOIN ({_HIDDEN}) h ON h.chunk_id = c.chunk_id")}

    @staticmethod
    def _hidden_count(db: sqlite3.Connection) -> int:
        return int(db.execute(f"SELECT COUNT(*) FROM ({_HIDDEN})").fetchone()[0])

    # -- the apply path ---------------------------------------------------------------------
    def settle(self, db: sqlite3.Connection, updates: Sequence[SourceUpdate]) -> VisibilityChange:
        """Examine what ``updates`` (already written in ``db``'s open transaction) added and
        removed; record the decisions; return what the search indexes must change."""
        self._drop_stale(db)
        now = time.time()
        last: dict[str, SourceUpdate] = {}
        for u in updates:
            last.pop(u.source_id, None)
            last[u.source_id] = u  # in order of each source's last update
        new: list[tuple[int, Chunk, float]] = []
        gone: list[str] = []
        entities: set[str] = set()
        for sid, u in last.items():
            current = dict(db.execute("SELECT chunk_id, row_id FROM chunks WHERE source_id=?",
                                      (sid,)).fetchall())
            known = {c for (c,) in db.execute(
                "SELECT chunk_id FROM chunk_signatures WHERE source_id=?", (sid,))}
            gone += sorted(known - current.keys())
            given = {c.chunk_id: c for c in u.chunks}
            ts = u.ts if u.ts is not None else now
            for cid in current.keys() - known:
                chunk = given.get(cid) or self._load_chunk(db, cid)
                new.append((int(current[cid]), chunk, ts))
            if u.op == "upsert" and u.ts is not None:
                entities |= ConflictTracker.retime(db, sid, u.ts)
        new.sort(key=lambda n: n[0])

        # Chunks outside the batch's sources whose status may change.
        orphans = [c for (c,) in self._in(
            db, "SELECT chunk_id FROM duplicates WHERE near_duplicate_of IN", gone)]
        entities |= ConflictTracker.forget(db, gone)
        for table in ("chunk_signatures", "duplicates"):
            db.executemany(f"DELETE FROM {table} WHERE chunk_id=?", [(c,) for c in gone])
        self._stale += gone
        for sid in last:
            group = [(c, ts) for _, c, ts in new if c.source_id == sid]
            if group:
                entities |= ConflictTracker.add(db, [c for c, _ in group], group[0][1])
        db.executemany("DELETE FROM duplicates WHERE chunk_id=?", [(c,) for c in orphans])
        ConflictTracker.resolve(db, entities)

        examine = [(r, c) for r, c, _ in new]
        new_rows = {r for r, _ in examine}
        for cid in orphans:
            row = db.execute("SELECT row_id FROM chunks WHERE chunk_id=?", (cid,)).fetchone()
            if row is not None:
                examine.append((int(row[0]), self._load_chunk(db, cid)))
        waiting = set(orphans)  # not canonical candidates before their own turn
        for row_id, chunk in sorted(examine, key=lambda e: e[0]):
            waiting.discard(chunk.chunk_id)
            self._examine(db, chunk, None if row_id in new_rows
                          else self._stored_signature(db, chunk.chunk_id), waiting)

        change = VisibilityChange()
        for sid in last:
            for row_id, hidden in db.execute(
                    f"SELECT row_id, {_IS_HIDDEN} FROM chunks WHERE source_id=?", (sid,)):
                (change.hide if hidden else change.visible).add(int(row_id))
        members = [c for (c,) in self._in(
            db, "SELECT DISTINCT chunk_id FROM facts WHERE entity IN", sorted(entities))]
        outside = list(dict.fromkeys([*orphans, *members]))
        rows = self._in(db, f"SELECT row_id, source_id, vector, {_IS_HIDDEN} FROM chunks "
                        "WHERE chunk_id IN", outside)
        shown: list[tuple[int, bytes]] = []
        for row_id, sid, vector, hidden in rows:
            if sid in last:
                continue
            if hidden:
                change.hide.add(int(row_id))
            else:
                shown.append((int(row_id), vector))
        if shown:
            change.show = [r for r, _ in shown]
            change.show_vectors = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in shown])
        return change

    def _examine(self, db: sqlite3.Connection, chunk: Chunk, sig: np.ndarray | None,
                 waiting: set[str] | frozenset[str] = frozenset()) -> None:
        """Mark ``chunk`` a duplicate of a visible chunk of another source, if it is one;
        store its signature when it is new."""
        digest = _exact_digest(chunk.text)
        if sig is None and self._near is not None:
            sig = self._near.signature(chunk.text, chunk.lang)
            db.execute("INSERT OR REPLACE INTO chunk_signatures VALUES (?,?,?,?)",
                       (chunk.chunk_id, chunk.source_id, digest,
                        None if sig is None else signature_bytes(sig)))
        elif self._near is None:
            db.execute("INSERT OR IGNORE INTO chunk_signatures VALUES (?,?,?,NULL)",
                       (chunk.chunk_id, chunk.source_id, digest))
        if self._near is None:
            return
        found: tuple[str, float, bool] | None = None
        for (cid,) in db.execute(
                "SELECT s.chunk_id FROM chunk_signatures s JOIN chunks c USING (chunk_id) "
                "WHERE s.digest=? AND s.source_id<>? ORDER BY c.row_id",
                (digest, chunk.source_id)).fetchall():
            if cid not in waiting and self._canonical(db, cid):
                found = (cid, 1.0, True)
                break
        if found is None and sig is not None:
            for cid, sim in self._near.find_signature(sig):
                if (cid != chunk.chunk_id and cid not in waiting
                        and self._canonical(db, cid, chunk.source_id)):
                    found = (cid, sim, False)
                    break
        if sig is not None:
            self._near.add_signatures([(chunk.chunk_id, sig, chunk.source_id)])
        if found is not None:
            db.execute("INSERT OR REPLACE INTO duplicates VALUES (?,?,?,?)",
                       (chunk.chunk_id, found[0], round(found[1], 4), int(found[2])))
            log.debug("chunk %s of %s duplicates %s (%.2f)", chunk.chunk_id, chunk.source_id,
                      found[0], found[1])

    @staticmethod
    def _canonical(db: sqlite3.Connection, chunk_id: str, not_source: str | None = None) -> bool:
        """Whether ``chunk_id`` is stored, visible, and (if given) not of ``not_source``."""
        row = db.execute(f"SELECT source_id, {_IS_HIDDEN} FROM chunks WHERE chunk_id=?",
                         (chunk_id,)).fetchone()
        return row is not None and not row[1] and row[0] != not_source

    @staticmethod
    def _stored_signature(db: sqlite3.Connection, chunk_id: str) -> np.ndarray | None:
        row = db.execute("SELECT signature FROM chunk_signatures WHERE chunk_id=?",
                         (chunk_id,)).fetchone()
        return signature_from_bytes(row[0]) if row and row[0] is not None else None

    @staticmethod
    def _load_chunk(db: sqlite3.Connection, chunk_id: str) -> Chunk:
        r = db.execute("SELECT chunk_id, doc_id, source_id, text, ordinal, lang, kind, meta "
                       "FROM chunks WHERE chunk_id=?", (chunk_id,)).fetchone()
        return Chunk(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], json.loads(r[7]))

    @staticmethod
    def _in(db: sqlite3.Connection, sql: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = db.execute(f"{sql} ({','.join('?' * len(part))})", part).fetchall()
            out += rows
        return out

    def _drop_stale(self, db: sqlite3.Connection) -> None:
        """Forget LSH keys whose chunks are gone (their removal has committed since)."""
        if self._near is None or not self._stale:
            self._stale.clear()
            return
        stale, self._stale = self._stale, []
        still = {c for (c,) in self._in(db, "SELECT chunk_id FROM chunks WHERE chunk_id IN",
                                         stale)}
        self._near.remove_many(c for c in stale if c not in still)


def near_duplicate_of(store: Docstore, chunk_id: str) -> str | None:
    """The chunk that ``chunk_id`` duplicates (search returns that one), or None."""
    with store.transaction() as db:
        row = db.execute("SELECT near_duplicate_of FROM duplicates WHERE chunk_id=?",
                         (chunk_id,)).fetchone()
    return str(row[0]) if row else None


def superseded_by(store: Docstore, chunk_id: str) -> str | None:
    """The newer conflicting chunk that hides ``chunk_id`` from search, or None."""
    with store.transaction() as db:
        row = db.execute("SELECT superseded_by FROM superseded WHERE chunk_id=?",
                         (chunk_id,)).fetchone()
    return str(row[0]) if row else None


def hidden_chunks(store: Docstore, source_id: str) -> dict[str, dict[str, str]]:
    """The source's chunks that search does not show, and why: ``{chunk_id:
    {"near_duplicate_of": id}}`` or ``{"superseded_by": id}`` (both when both hold)."""
    out: dict[str, dict[str, str]] = {}
    with store.transaction() as db:
        for cid, dup in db.execute(
                "SELECT d.chunk_id, d.near_duplicate_of FROM duplicates d JOIN chunks c "
                "ON c.chunk_id = d.chunk_id WHERE c.source_id=?", (source_id,)):
            out.setdefault(cid, {})["near_duplicate_of"] = dup
        for cid, newer in db.execute(
                "SELECT s.chunk_id, s.superseded_by FROM superseded s JOIN chunks c "
                "ON c.chunk_id = s.chunk_id WHERE c.source_id=?", (source_id,)):
            out.setdefault(cid, {})["superseded_by"] = newer
    return out
