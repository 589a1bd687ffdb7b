"""SQLite docstore: chunks, their vectors, lineage, and the Kafka offsets applied.

The docstore is the durable truth of the index. One transaction per applied batch commits
the chunk rows, their vectors and the offsets they came from together, so a replica that
restarts knows exactly where to resume; the FAISS file is a snapshot derived from it and is
rebuilt from the stored vectors whenever it is missing or older than the docstore.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kinject import sqlite
from kinject.types import Chunk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id    TEXT NOT NULL UNIQUE,
    doc_id      TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    text        TEXT NOT NULL,
    lang        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    meta        TEXT NOT NULL,
    vector      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source_id);
CREATE TABLE IF NOT EXISTS lineage (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id   TEXT NOT NULL,
    op          TEXT NOT NULL,
    topic       TEXT,
    partition   INTEGER,
    offset      INTEGER,
    content_hash TEXT,
    chunk_ids   TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lineage_source ON lineage(source_id);
CREATE TABLE IF NOT EXISTS state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS images (
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id    TEXT NOT NULL UNIQUE,
    source_id   TEXT NOT NULL,
    caption     TEXT NOT NULL,
    ocr_text    TEXT NOT NULL,
    meta        TEXT NOT NULL,
    thumbnail   BLOB,
    vector      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_source ON images(source_id);
"""


@dataclass(frozen=True)
class StoredChunk:
    row_id: int
    chunk: Chunk


class Docstore(sqlite.Store):
    """A SQLite file of chunks and lineage. Thread-safe; one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite.connect(path, schema=_SCHEMA, synchronous="FULL")

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One atomic write (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        return sqlite.transaction(self._db, self._lock)

    # -- writes (call inside transaction()) -----------------------------------------------
    @staticmethod
    def upsert_chunks(
        db: sqlite3.Connection, chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> list[int]:
        """Insert chunks that are new and take the meta of those already stored (a record
        that changes only its metadata keeps its chunk ids); return every chunk's row id."""
        rows = []
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        for c, v in zip(chunks, vecs, strict=True):
            db.execute(
                "INSERT INTO chunks(chunk_id, doc_id, source_id, ordinal, text, lang,"
                " kind, meta, vector) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(chunk_id) DO UPDATE SET meta=excluded.meta",
                (
                    c.chunk_id,
                    c.doc_id,
                    c.source_id,
                    c.ordinal,
                    c.text,
                    c.lang,
                    c.kind,
                    json.dumps(c.meta, ensure_ascii=False, default=str),
                    v.tobytes(),
                ),
            )
            row = db.execute("SELECT row_id FROM chunks WHERE chunk_id=?", (c.chunk_id,)).fetchone()
            rows.append(int(row[0]))
        return rows

    @staticmethod
    def remove_source_except(
        db: sqlite3.Connection, source_id: str, keep: Iterable[str] = ()
    ) -> list[int]:
        """Delete the source's chunks not in ``keep``; return their row ids."""
        keep_set = set(keep)
        gone = [
            (int(r), cid)
            for r, cid in db.execute(
                "SELECT row_id, chunk_id FROM chunks WHERE source_id=?", (source_id,)
            )
            if cid not in keep_set
        ]
        db.executemany("DELETE FROM chunks WHERE row_id=?", [(r,) for r, _ in gone])
        return [r for r, _ in gone]

    @staticmethod
    def add_lineage(
        db: sqlite3.Connection,
        source_id: str,
        op: str,
        position: tuple[str, int, int] | None,
        content_hash: str | None,
        chunk_ids: Sequence[str],
    ) -> None:
        topic, partition, offset = position if position else (None, None, None)
        db.execute(
            "INSERT INTO lineage(source_id, op, topic, partition, offset, content_hash,"
            " chunk_ids, at) VALUES (?,?,?,?,?,?,?,?)",
            (
                source_id,
                op,
                topic,
                partition,
                offset,
                content_hash,
                json.dumps(list(chunk_ids)),
                time.time(),
            ),
        )

    @staticmethod
    def set_offset(db: sqlite3.Connection, topic: str, partition: int, next_offset: int) -> None:
        db.execute(
            "INSERT INTO offsets(topic, partition, next_offset) VALUES (?,?,?) "
            "ON CONFLICT(topic, partition) DO UPDATE SET next_offset="
            "MAX(excluded.next_offset, offsets.next_offset)",
            (topic, partition, next_offset),
        )

    @staticmethod
    def bump_generation(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM state WHERE key='generation'").fetchone()
        gen = int(row[0]) + 1 if row else 1
        db.execute("INSERT OR REPLACE INTO state(key, value) VALUES ('generation', ?)", (str(gen),))
        return gen

    @staticmethod
    def set_state(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, value))

    @staticmethod
    def clear_offsets(db: sqlite3.Connection, topic: str) -> None:
        db.execute("DELETE FROM offsets WHERE topic=?", (topic,))

    # -- reads ------------------------------------------------------------------------------
    def offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            return {
                int(p): int(o)
                for p, o in self._db.execute(
                    "SELECT partition, next_offset FROM offsets WHERE topic=?", (topic,)
                )
            }

    def chunks_by_rows(self, row_ids: Sequence[int]) -> dict[int, Chunk]:
        if not row_ids:
            return {}
        marks = ",".join("?" * len(row_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT row_id, chunk_id, doc_id, source_id, ordinal, text, lang, kind, meta "
                f"FROM chunks WHERE row_id IN ({marks})",
                [int(r) for r in row_ids],
            ).fetchall()
        return {int(r[0]): _chunk(r[1:]) for r in rows}

    def chunks_by_sources(self, source_ids: Sequence[str]) -> list[Chunk]:
        """The chunks of these sources, source by source in the order given, each in order."""
        if not source_ids:
            return []
        wanted = list(dict.fromkeys(source_ids))
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT chunk_id, doc_id, source_id, ordinal, text, lang, kind, meta "
                f"FROM chunks WHERE source_id IN ({marks}) ORDER BY ordinal, row_id", wanted,
            ).fetchall()
        place = {s: i for i, s in enumerate(wanted)}
        return sorted((_chunk(r) for r in rows), key=lambda c: place[c.source_id])

    def state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All (row ids, vectors), for rebuilding the FAISS index."""
        with self._lock:
            rows = self._db.execute("SELECT row_id, vector FROM chunks ORDER BY row_id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        return ids, vecs

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def lineage(self, source_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT op, topic, partition, offset, content_hash, chunk_ids, at FROM lineage "
                "WHERE source_id=? ORDER BY id",
                (source_id,),
            ).fetchall()
        return [
            {
                "op": r[0],
                "topic": r[1],
                "partition": r[2],
                "offset": r[3],
                "content_hash": r[4],
                "chunk_ids": json.loads(r[5]),
                "at": r[6],
            }
            for r in rows
        ]

    def recent_lineage(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest applied update of each of the ``limit`` sources updated last, newest
        first (the web page's recent ingests: a source published again shows once)."""
        with self._lock:
            rows = self._db.execute(  # the NOT EXISTS walks lineage_source (source_id, id)
                "SELECT source_id, op, topic, partition, offset, chunk_ids, at FROM lineage l "
                "WHERE NOT EXISTS (SELECT 1 FROM lineage n WHERE n.source_id = l.source_id "
                "AND n.id > l.id) ORDER BY id DESC LIMIT ?",
                (max(int(limit), 0),),
            ).fetchall()
        return [
            {"source_id": r[0], "op": r[1], "topic": r[2], "partition": r[3], "offset": r[4],
             "chunks": len(json.loads(r[5])), "at": r[6]}
            for r in rows
        ]

    # -- images (the CLIP index's rows; ImageIndex keeps their FAISS copy) ---------------------
    @staticmethod
    def upsert_images(db: sqlite3.Connection, rows: Sequence[dict[str, Any]],
                      vectors: np.ndarray) -> list[int]:
        """Insert or refresh images (dicts with image_id, source_id, caption, ocr_text, meta,
        thumbnail); return their row ids, which stay stable across refreshes."""
        out = []
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        for r, v in zip(rows, vecs, strict=True):
            db.execute(
                "INSERT INTO images(image_id, source_id, caption, ocr_text, meta, thumbnail,"
                " vector) VALUES (?,?,?,?,?,?,?) ON CONFLICT(image_id) DO UPDATE SET"
                " source_id=excluded.source_id, caption=excluded.caption,"
                " ocr_text=excluded.ocr_text, meta=excluded.meta, thumbnail=excluded.thumbnail,"
                " vector=excluded.vector",
                (r["image_id"], r["source_id"], r["caption"], r["ocr_text"],
                 json.dumps(r["meta"], ensure_ascii=False, default=str), r.get("thumbnail"),
                 v.tobytes()),
            )
            row = db.execute("SELECT row_id FROM images WHERE image_id=?",
                             (r["image_id"],)).fetchone()
            out.append(int(row[0]))
        return out

    @staticmethod
    def remove_images(db: sqlite3.Connection, *, source_id: str | None = None,
                      image_ids: Iterable[str] = (), keep: Iterable[str] = ()) -> list[int]:
        """Delete a source's images not in ``keep``, or the given image ids; return row ids."""
        if source_id is not None:
            found = db.execute("SELECT row_id, image_id FROM images WHERE source_id=?",
                               (source_id,)).fetchall()
        else:
            ids = list(image_ids)
            marks = ",".join("?" * len(ids))
            found = db.execute(f"SELECT row_id, image_id FROM images WHERE image_id IN ({marks})",
                               ids).fetchall() if ids else []
        keep_set = set(keep)
        gone = [int(r) for r, iid in found if iid not in keep_set]
        db.executemany("DELETE FROM images WHERE row_id=?", [(r,) for r in gone])
        return gone

    def images_by_rows(self, row_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not row_ids:
            return {}
        marks = ",".join("?" * len(row_ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT row_id, image_id, source_id, caption, ocr_text, meta, thumbnail "
                f"FROM images WHERE row_id IN ({marks})", [int(r) for r in row_ids]).fetchall()
        return {int(r[0]): {"image_id": r[1], "source_id": r[2], "caption": r[3],
                            "ocr_text": r[4], "meta": json.loads(r[5]), "thumbnail": r[6]}
                for r in rows}

    def image_thumbnail(self, image_id: str) -> bytes | None:
        """The JPEG thumbnail kept for ``image_id``; None for an image it does not hold."""
        with self._lock:
            row = self._db.execute("SELECT thumbnail FROM images WHERE image_id=?",
                                   (image_id,)).fetchone()
        return bytes(row[0]) if row and row[0] else None

    def image_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All (row ids, vectors) of images, for rebuilding the image FAISS index."""
        with self._lock:
            rows = self._db.execute("SELECT row_id, vector FROM images ORDER BY row_id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))

    def image_count(self, source_id: str | None = None) -> int:
        with self._lock:
            if source_id is None:
                return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM images WHERE source_id=?",
                                        (source_id,)).fetchone()[0])


def _chunk(r: Sequence[Any]) -> Chunk:
    return Chunk(
        chunk_id=r[0],
        doc_id=r[1],
        source_id=r[2],
        ordinal=int(r[3]),
        text=r[4],
        lang=r[5],
        kind=r[6],
        meta=json.loads(r[7]),
    )
