"""Dead letters kept in kinject's own store (SQLite), so they outlive the broker.

The embedded broker keeps its log in memory: a restart empties ``kinject.dlq``. The ingest
worker therefore writes every dead letter here first (fsynced, with the original bytes and
the reason) and mirrors it to the topic; letters that only the topic holds (written by a
worker on another machine) are copied in by :meth:`DeadLetterStore.mirror`. Listing and
replay read this store.

Idempotent: a record's position (cluster, topic, partition, offset) is recorded once, so a
batch processed twice (a crash before the commit) adds nothing. The same bytes failing
again at another position (the outbox re-sent them to a restarted broker) count as another
sighting of the same letter, not a new one, until the letter is replayed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kinject import sqlite
from kinject.stream.dlq import DeadLetter

log = logging.getLogger(__name__)

DLQ_FILE = "dead_letters.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    digest      TEXT NOT NULL,
    at          REAL NOT NULL,
    stage       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    topic       TEXT,
    partition   INTEGER,
    "offset"    INTEGER,
    key         BLOB,
    value       BLOB,
    seen        INTEGER NOT NULL DEFAULT 1,
    replayed_at REAL
);
CREATE INDEX IF NOT EXISTS letters_digest ON letters (digest, replayed_at);
CREATE TABLE IF NOT EXISTS positions (
    cluster_id  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    letter      INTEGER NOT NULL REFERENCES letters (id),
    PRIMARY KEY (cluster_id, topic, partition, "offset")
);
"""

_COLUMNS = ('id, at, stage, reason, error_type, topic, partition, "offset", key, value, seen, '
            "replayed_at")


def letter_digest(key: bytes | None, value: bytes | None) -> str:
    """What makes two dead letters the same record: its key and value bytes."""
    h = hashlib.sha256()
    for part in (key, value):
        h.update(b"-" if part is None else b"%d:" % len(part))
        h.update(part or b"")
    return h.hexdigest()


class DeadLetterStore(sqlite.Store):
    """The dead-letter file of a data directory. Safe to share between threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # FULL: a dead letter survives a power cut.
        self._db = sqlite.connect(self.path, schema=_SCHEMA, synchronous="FULL", timeout=30.0,
                                  what="dead-letter store")
        self._lock = threading.Lock()

    def record(self, *, cluster_id: str | None, topic: str, partition: int, offset: int,
               key: bytes | None, value: bytes | None, stage: str, reason: str,
               error_type: str, digest: str | None = None, keep_value: bool = True,
               at: float | None = None) -> tuple[int, bool]:
        """Keep one dead letter; returns (letter id, whether it is a new letter)."""
        digest = digest or letter_digest(key, value)
        position = (cluster_id or "", topic, partition, offset)
        with sqlite.transaction(self._db, self._lock):
            row = self._db.execute(
                'SELECT letter FROM positions WHERE cluster_id=? AND topic=? AND partition=? '
                'AND "offset"=?', position).fetchone()
            if row is not None:  # this very message again (a batch read twice)
                return int(row[0]), False
            row = self._db.execute(
                "SELECT id FROM letters WHERE digest=? AND replayed_at IS NULL "
                "ORDER BY id LIMIT 1", (digest,)).fetchone()
            new = row is None
            if new:
                cur = self._db.execute(
                    "INSERT INTO letters (digest, at, stage, reason, error_type, topic, "
                    'partition, "offset", key, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (digest, at or time.time(), stage, reason, error_type, topic, partition,
                     offset, key, value if keep_value else None))
                assert cur.lastrowid is not None
                letter = int(cur.lastrowid)
            else:
                letter = int(row[0])
                self._db.execute("UPDATE letters SET seen = seen + 1 WHERE id=?", (letter,))
            self._db.execute(
                'INSERT INTO positions (cluster_id, topic, partition, "offset", letter) '
                "VALUES (?, ?, ?, ?, ?)", (*position, letter))
        return letter, new

    def mirror(self, letters: Iterable[DeadLetter], cluster_id: str | None) -> int:
        """Copy letters read from the dlq topic of cluster ``cluster_id``; returns how many
        were new. A letter this store already holds (the same position) adds nothing."""
        added = 0
        for d in letters:
            if d.source_topic is not None and d.source_partition is not None \
                    and d.source_offset is not None:
                where = (d.source_topic, d.source_partition, d.source_offset)
            else:  # someone else's message on the topic: its own position names it
                where = (f"{d.source_topic or 'dlq'}#dlq", d.partition, d.offset)
            _, new = self.record(cluster_id=d.cluster_id or cluster_id, topic=where[0],
                                 partition=where[1], offset=where[2], key=d.key, value=d.value,
                                 stage=d.stage, reason=d.reason, error_type=d.error_type,
                                 digest=d.digest, at=d.at)
            added += new
        return added

    def latest(self, limit: int | None = None) -> list[DeadLetter]:
        """The latest ``limit`` letters (all with None), oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM letters ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,)).fetchall()
        return [_letter(r) for r in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM letters").fetchone()[0])

    def mark_replayed(self, ids: Iterable[int]) -> None:
        """Replayed letters stay listed; if the record fails again, that is a new letter."""
        now = time.time()
        with self._lock:
            self._db.executemany("UPDATE letters SET replayed_at=? WHERE id=?",
                                 [(now, i) for i in ids])

    def __repr__(self) -> str:
        return f"DeadLetterStore({self.path})"


def open_dead_letter_store(data_dir: Path) -> DeadLetterStore:
    return DeadLetterStore(Path(data_dir) / DLQ_FILE)


def _letter(row: Any) -> DeadLetter:
    (row_id, at, stage, reason, error_type, topic, partition, offset, key, value, seen,
     replayed_at) = row
    # partition -1: a stored letter is named by its row, not by a place in the dlq topic.
    return DeadLetter(partition=-1, offset=row_id, at=at, stage=stage, reason=reason,
                      error_type=error_type, source_topic=topic, source_partition=partition,
                      source_offset=offset, key=key, value=value, row=row_id, seen=seen,
                      replayed_at=replayed_at)
