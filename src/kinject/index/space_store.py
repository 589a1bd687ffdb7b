"""Tables beside the docstore's chunks: vectors of a second space, and the reads the hybrid
index needs (row ids, texts, filtered rows). They share the docstore's SQLite file and
transactions, so a chunk and its vectors in every space are committed together."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from kinject.index.docstore import Docstore
from kinject.index.filters import SearchFilters
from kinject.types import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS space_vectors (
    space       TEXT NOT NULL,
    row_id      INTEGER NOT NULL,
    vector      BLOB NOT NULL,
    PRIMARY KEY (space, row_id)
);
"""


@contextmanager
def reading(store: Docstore) -> Iterator[sqlite3.Connection]:
    """The docstore's connection for a consistent read (one transaction)."""
    with store.transaction() as db:
        yield db


def ensure_schema(store: Docstore) -> None:
    with store.transaction() as db:
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                db.execute(stmt)


def put_vectors(db: sqlite3.Connection, space: str, rows: Sequence[int], vectors: np.ndarray
                ) -> None:
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    db.executemany(
        "INSERT OR IGNORE INTO space_vectors(space, row_id, vector) VALUES (?,?,?)",
        [(space, int(r), v.tobytes()) for r, v in zip(rows, vecs, strict=True)],
    )


def drop_rows(db: sqlite3.Connection, rows: Sequence[int]) -> None:
    db.executemany("DELETE FROM space_vectors WHERE row_id=?", [(int(r),) for r in rows])


def space_vectors(store: Docstore, space: str) -> tuple[np.ndarray, np.ndarray]:
    """All (row ids, vectors) of a space, for rebuilding its index."""
    with reading(store) as db:
        rows = db.execute("SELECT row_id, vector FROM space_vectors WHERE space=? "
                          "ORDER BY row_id", (space,)).fetchall()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return (np.array([r[0] for r in rows], dtype=np.int64),
            np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))


def vectors_for(store: Docstore, space: str | None, rows: Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, vectors) of the given rows in ``space`` (None: the chunks' own vectors)."""
    out_ids: list[int] = []
    out_vecs: list[np.ndarray] = []
    with reading(store) as db:
        for start in range(0, len(rows), 900):
            part = [int(r) for r in rows[start:start + 900]]
            marks = ",".join("?" * len(part))
            if space is None:
                found = db.execute(f"SELECT row_id, vector FROM chunks WHERE row_id IN ({marks})",
                                   part).fetchall()
            else:
                found = db.execute(f"SELECT row_id, vector FROM space_vectors WHERE space=? AND "
                                   f"row_id IN ({marks})", [space, *part]).fetchall()
            for r, blob in found:
                out_ids.append(int(r))
                out_vecs.append(np.frombuffer(blob, dtype=np.float32))
    if not out_ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.array(out_ids, dtype=np.int64), np.stack(out_vecs)


def row_ids(store: Docstore) -> np.ndarray:
    with reading(store) as db:
        return np.array([r[0] for r in db.execute("SELECT row_id FROM chunks")], dtype=np.int64)


def texts(store: Docstore, rows: Sequence[int] | None = None) -> tuple[list[int], list[str]]:
    """(row ids, texts) of all chunks, or of the given rows."""
    with reading(store) as db:
        if rows is None:
            found = db.execute("SELECT row_id, text FROM chunks ORDER BY row_id").fetchall()
        else:
            found = []
            for start in range(0, len(rows), 900):
                part = [int(r) for r in rows[start:start + 900]]
                marks = ",".join("?" * len(part))
                found += db.execute(f"SELECT row_id, text FROM chunks WHERE row_id IN ({marks})",
                                    part).fetchall()
    return [int(r[0]) for r in found], [str(r[1]) for r in found]


def matching_rows(store: Docstore, filters: SearchFilters) -> list[int]:
    """Row ids of the chunks that pass ``filters`` (SQL for kind/lang/source, then meta)."""
    where, params = filters.sql()
    with reading(store) as db:
        found = db.execute(f"SELECT row_id, chunk_id, doc_id, source_id, ordinal, text, lang, "
                           f"kind, meta FROM chunks WHERE {where}", params).fetchall()
    needs_meta = filters.tags or filters.since is not None or filters.until is not None
    if not needs_meta:
        return [int(r[0]) for r in found]
    out = []
    for r in found:
        chunk = Chunk(chunk_id=r[1], doc_id=r[2], source_id=r[3], ordinal=int(r[4]), text=r[5],
                      lang=r[6], kind=r[7], meta=json.loads(r[8]))
        if filters.matches(chunk):
            out.append(int(r[0]))
    return out
