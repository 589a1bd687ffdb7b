"""CorpusStore: the durable fine-tuning corpus (SQLite), one row per training example.

Every chunk materialised from ``kinject.chunks`` is kept (for distractors and evaluation
questions) with the examples built from it (:mod:`kinject.finetune.augment`). Each example
carries its lineage (chunk id, source id) and the cycle it first appeared in. Writes are
transactions, so a crash leaves the store as it was before or after a write; example ids
are ``hash(chunk id, form, variant)``, so adding the same chunk twice changes nothing.

Cycles: examples that arrive now belong to :meth:`current_cycle` (1 at first). A training
job calls :meth:`next_cycle` when it takes the corpus: what it trains on is the cycle it
closed and before; what arrives during training belongs to the next one.

Each store has an id (a UUID made when the file is created, kept in it): the corpus
materialisers' consumer group is named after it, so processes writing one store share the
work and a store elsewhere (another data dir) gets every event.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from kinject import sqlite
from kinject.finetune.augment import AugmentConfig, build_examples, distractor_units
from kinject.finetune.corpus_reads import CorpusReads
from kinject.finetune.corpus_schema import (
    _CHUNK_COLUMNS,
    _EXAMPLE_COLUMNS,
    _SCHEMA,
    _row_to_chunk,
)
from kinject.prompting import fence
from kinject.types import Chunk, TrainingExample, content_hash

if TYPE_CHECKING:
    from kinject.finetune.paraphrase import Candidate

log = logging.getLogger(__name__)


class CorpusStore(CorpusReads):
    """The corpus in one SQLite file; safe to share between threads of one process and
    between processes (WAL, short transactions)."""

    def __init__(self, path: Path, augment: AugmentConfig | None = None,
                 distractor_pool: int = 64) -> None:
        self.path = Path(path)
        self.augment = augment or AugmentConfig()
        self.distractor_pool = distractor_pool
        self._lock = threading.RLock()
        self._db = sqlite.connect(self.path, schema=_SCHEMA, synchronous="NORMAL", timeout=30)
        self.store_id = self._own_id()

    # -- plumbing -----------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One atomic write (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        return sqlite.transaction(self._db, self._lock)

    def sync(self) -> None:
        """Make every write committed so far survive a power cut. Commits are fsynced only
        at checkpoints here (synchronous=NORMAL: a crashed process loses nothing, a power
        cut the last commits), so fsync the write-ahead log before telling anyone else that
        the writes are done (the materialiser's Kafka offset commit)."""
        wal = self.path.with_name(self.path.name + "-wal")
        with self._lock:
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:  # checkpointed away: the database file was synced
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _own_id(self) -> str:
        """This store's id, made once (the first process to open the file wins the race)."""
        with self._lock:
            found = self._get("store_id", "")
        if found:
            return found
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO state(key, value) VALUES('store_id', ?)",
                       (uuid.uuid4().hex,))
            return self._get("store_id", "")

    @staticmethod
    def _set(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO state(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                   "SET value=excluded.value", (key, value))

    # -- cycles -------------------------------------------------------------------------
    def current_cycle(self) -> int:
        """The cycle that examples arriving now belong to (1 at first)."""
        with self._lock:
            return int(self._get("cycle", "1"))

    def next_cycle(self) -> int:
        """Close the current cycle and open the next; returns the new current cycle.

        A training job calls it when it takes the corpus: it trains on ``cycles <= new - 1``.
        """
        with self.transaction() as db:
            nxt = int(self._get("cycle", "1")) + 1
            self._set(db, "cycle", str(nxt))
        return nxt

    # -- writes -------------------------------------------------------------------------
    def add_chunks(self, chunks: Sequence[Chunk], cycle: int | None = None) -> int:
        """Keep ``chunks`` and their examples; returns how many examples were new.

        Examples already present keep the cycle they first appeared in.
        """
        if not chunks:
            return 0
        distractors = self._distractors(chunks)
        with self.transaction() as db:
            return self._add(db, chunks, self._cycle(cycle), distractors)

    def replace_source(self, source_id: str, chunks: Sequence[Chunk],
                       cycle: int | None = None) -> tuple[int, int]:
        """A source's full new set of chunks (an upsert on kinject.chunks): examples of its
        chunks that are gone are removed, new ones added. Returns (added, removed)."""
        if any(c.source_id != source_id for c in chunks):
            raise ValueError(f"replace_source({source_id!r}) got chunks of other sources")
        distractors = self._distractors(chunks)
        keep = [c.chunk_id for c in chunks]
        with self.transaction() as db:
            removed = self._remove(db, source_id, keep)
            added = self._add(db, chunks, self._cycle(cycle), distractors)
        return added, removed

    def _cycle(self, cycle: int | None) -> int:
        """``cycle``, or (None) the current one, read inside the write transaction: read
        before it, a training job (another process) could close that cycle and take it in
        between, and the examples would join a cycle already trained on, never trained."""
        return int(self._get("cycle", "1")) if cycle is None else cycle

    def remove_source(self, source_id: str) -> int:
        """Forget a source: its chunks, examples (LM paraphrases included), cached
        paraphrase candidates and replay slots, and its text wherever other chunks' RAFT
        examples hold it as a distractor (those are rebuilt with other distractors).
        Returns the source's own examples removed."""
        with self.transaction() as db:
            return self._remove(db, source_id, [])

    def _add(self, db: sqlite3.Connection, chunks: Sequence[Chunk], cycle: int,
             distractors: list[str]) -> int:
        seq = int(self._get("seq", "0"))
        added = 0
        for chunk in chunks:
            db.execute(
                "INSERT OR IGNORE INTO chunks VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (chunk.chunk_id, chunk.source_id, chunk.doc_id, chunk.text, chunk.ordinal,
                 chunk.lang, chunk.kind, json.dumps(chunk.meta, ensure_ascii=False, default=str),
                 cycle))
            others = [t for t in distractors if t != chunk.text]
            for ex in build_examples(chunk, others, cycle=cycle, config=self.augment):
                seq += 1
                cur = db.execute(
                    f"INSERT OR IGNORE INTO examples({_EXAMPLE_COLUMNS}, seq) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ex.example_id, ex.chunk_id, ex.source_id, ex.prompt, ex.completion, ex.form,
                     cycle, ex.lang, seq))
                added += cur.rowcount
        self._set(db, "seq", str(seq))
        return added

    def _remove(self, db: sqlite3.Connection, source_id: str, keep: Sequence[str]) -> int:
        marks = ",".join("?" * len(keep))
        cond = f"source_id=? AND chunk_id NOT IN ({marks})" if keep else "source_id=?"
        args = (source_id, *keep)
        gone = [r[0] for r in db.execute(f"SELECT text FROM chunks WHERE {cond}", args)]
        db.execute("DELETE FROM replay WHERE example_id IN "
                   f"(SELECT example_id FROM examples WHERE {cond})", args)
        removed = db.execute(f"DELETE FROM examples WHERE {cond}", args).rowcount
        db.execute(f"DELETE FROM paraphrases WHERE {cond}", args)
        db.execute(f"DELETE FROM chunks WHERE {cond}", args)
        if gone:
            self._purge_distractors(db, gone)
        return removed

    def _purge_distractors(self, db: sqlite3.Connection, texts: Sequence[str]) -> None:
        """A deleted (or replaced) text must not live on inside other chunks' RAFT examples,
        where it was a wrong passage: those examples are rebuilt with distractors drawn from
        what the corpus still holds. A rebuilt example keeps its id (it is named by its
        question), so replay slots keep pointing at it, and the cycle of its chunk."""
        # as the passages are quoted in a RAFT prompt (kinject.prompting.fence)
        units = sorted({fence(u) for t in texts for u in distractor_units(t) if u.strip()})
        hit: set[str] = set()
        for start in range(0, len(units), 200):  # one scan of the RAFT rows per 200 units
            part = units[start:start + 200]
            found = " OR ".join(["instr(prompt, ?) > 0"] * len(part))
            hit.update(r[0] for r in db.execute(
                f"SELECT DISTINCT chunk_id FROM examples WHERE form='raft' AND ({found})", part))
        if not hit:
            return
        ids = sorted(hit)
        marks = ",".join("?" * len(ids))
        db.execute(f"DELETE FROM examples WHERE form='raft' AND chunk_id IN ({marks})", ids)
        rows = db.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE chunk_id IN ({marks}) "
                          "ORDER BY cycle, chunk_id", ids).fetchall()
        by_cycle: dict[int, list[Chunk]] = {}
        for chunk, cycle in map(_row_to_chunk, rows):
            by_cycle.setdefault(cycle, []).append(chunk)
        for cycle, chunks in by_cycle.items():
            self._add(db, chunks, cycle, self._distractor_texts(db, chunks))
        log.info("rebuilt the RAFT examples of %d chunk(s) that held deleted text as a "
                 "distractor", len(ids))

    # -- LM paraphrases (kinject.finetune.paraphrase) -------------------------------------
    def paraphrase_candidates(self, chunk_ids: Sequence[str]
                              ) -> dict[str, dict[str, list[tuple[str, bool]]]]:
        """Cached candidates per chunk and sentence: (text, kept) in the order stored."""
        out: dict[str, dict[str, list[tuple[str, bool]]]] = {}
        with self._lock:
            for start in range(0, len(chunk_ids), 500):
                part = list(chunk_ids[start:start + 500])
                rows = self._db.execute(
                    "SELECT chunk_id, sentence, text, kept FROM paraphrases WHERE chunk_id IN "
                    f"({','.join('?' * len(part))}) ORDER BY rowid", part).fetchall()
                for chunk_id, sentence, text, kept in rows:
                    out.setdefault(chunk_id, {}).setdefault(sentence, []).append(
                        (text, bool(kept)))
        return out

    def add_paraphrases(self, candidates: Sequence[Candidate],
                        examples: Sequence[TrainingExample]) -> int:
        """Cache generated candidates (kept and dropped) and add the paraphrase examples,
        each only while its chunk is still in the corpus (a delete that arrived during
        generation wins). Examples keep the cycle of their chunk. Returns examples added."""
        with self.transaction() as db:
            wanted = sorted({c.chunk_id for c in candidates} | {e.chunk_id for e in examples})
            live: set[str] = set()
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                live.update(r[0] for r in db.execute(
                    f"SELECT chunk_id FROM chunks WHERE chunk_id IN ({','.join('?' * len(part))})",
                    part))
            db.executemany(
                "INSERT OR IGNORE INTO paraphrases VALUES(?, ?, ?, ?, ?, ?)",
                [(c.chunk_id, c.source_id, c.sentence, c.text, int(c.kept), c.reason or "")
                 for c in candidates if c.chunk_id in live])
            seq = int(self._get("seq", "0"))
            added = 0
            for ex in examples:
                if ex.chunk_id not in live:
                    continue
                seq += 1
                added += db.execute(
                    f"INSERT OR IGNORE INTO examples({_EXAMPLE_COLUMNS}, seq) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ex.example_id, ex.chunk_id, ex.source_id, ex.prompt, ex.completion,
                     ex.form, ex.cycle, ex.lang, seq)).rowcount
            self._set(db, "seq", str(seq))
        return added

    def _distractors(self, chunks: Sequence[Chunk]) -> list[str]:
        """Texts of other chunks for RAFT: stored ones of other sources, and this batch."""
        with self._lock:
            return self._distractor_texts(self._db, chunks)

    def _distractor_texts(self, db: sqlite3.Connection, chunks: Sequence[Chunk]) -> list[str]:
        sources = sorted({c.source_id for c in chunks})
        marks = ",".join("?" * len(sources))
        rows = db.execute(
            f"SELECT text FROM chunks WHERE source_id NOT IN ({marks}) "
            "ORDER BY chunk_id LIMIT ?", (*sources, 10 * self.distractor_pool)).fetchall()
        texts = [r[0] for r in rows]
        rng = random.Random(content_hash(*sorted(c.chunk_id for c in chunks)))
        picked = rng.sample(texts, min(self.distractor_pool, len(texts)))
        return picked + [c.text for c in chunks]

