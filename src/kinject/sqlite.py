"""The SQLite plumbing kinject's durable stores share: one WAL connection per file, and
short write transactions under the store's lock.

Connections are in autocommit mode (``isolation_level=None``): a store opens a transaction
itself, with ``BEGIN IMMEDIATE`` so a writer takes the write lock up front instead of
failing half-way when another process writes too.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Self

from kinject.errors import KinjectError


def connect(path: Path | str, *, schema: str = "",
            synchronous: Literal["NORMAL", "FULL"] = "FULL", timeout: float = 5.0,
            what: str | None = None) -> sqlite3.Connection:
    """Open (creating its folder) a SQLite file in WAL mode, shareable between threads, and
    run ``schema`` (CREATE ... IF NOT EXISTS statements) on it.

    ``synchronous=FULL`` fsyncs every commit (it survives a power cut); ``NORMAL`` only
    at checkpoints (a crash of the process loses nothing, a power cut the last commits).
    ``timeout``: seconds a write waits for another process's write lock. With ``what`` (the
    store's name), a SQLite error raises KinjectError naming the store and its path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, timeout=timeout,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if schema:
            db.executescript(schema)
    except sqlite3.Error as exc:
        if what is None:
            raise
        raise KinjectError(f"cannot open the {what} {path}: {exc}") from exc
    return db


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock | threading.RLock
                ) -> Iterator[sqlite3.Connection]:
    """One atomic write under ``lock`` (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


class Store:
    """Base of a store kept in one SQLite file (``_db``) behind a lock (``_lock``): ``close``
    it, or use it as ``with store:``."""

    _db: sqlite3.Connection
    _lock: threading.Lock | threading.RLock

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
