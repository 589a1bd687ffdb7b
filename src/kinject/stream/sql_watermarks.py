"""The last watermark value read from each SQL source, kept durably for ``kinject ingest-sql``.

Keyed by :attr:`~kinject.stream.sql_source.SqlSource.state_key` (the URL without its
password, the table or query, the column); values keep their type (numbers, strings,
dates and times) across processes. Beside each value: the digests of the rows already read
at that value, so a row committed later with the same value is read, and the others not.
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from kinject import sqlite
from kinject.errors import KinjectError
from kinject.stream.sql_source import SqlSourceError

_log = logging.getLogger(__name__)

WATERMARK_FILE = "sql_watermarks.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (
    key        TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- Digests of the rows read at the stored value (sql_source.row_digest): the next run reads
-- rows at that value again and publishes only those not listed here.
CREATE TABLE IF NOT EXISTS edge_rows (
    key    TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (key, digest)
)
"""


def _encode(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return "int", str(int(value))
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, float) and math.isfinite(value):
        return "float", repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return "decimal", str(value)
    if isinstance(value, datetime.datetime):
        return "datetime", value.isoformat()
    if isinstance(value, datetime.date):
        return "date", value.isoformat()
    if isinstance(value, datetime.time):
        return "time", value.isoformat()
    if isinstance(value, str):
        return "str", value
    raise SqlSourceError(
        f"a watermark column must hold numbers, strings, dates or times, "
        f"not {type(value).__name__} ({value!r})"
    )


_DECODERS: dict[str, Any] = {
    "int": int,
    "float": float,
    "decimal": Decimal,
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "str": str,
}


def later(a: Any, b: Any) -> Any:
    """The greater of two watermark values, either of which may be None."""
    if a is None:
        return b
    if b is None:
        return a
    try:
        return b if b > a else a
    except TypeError as exc:
        raise SqlSourceError(
            f"the watermark column holds values that cannot be compared: {a!r} and {b!r}"
        ) from exc


class WatermarkStore(sqlite.Store):
    """The last watermark value per source (SQLite, WAL, fsynced commits)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite.connect(self.path, schema=_SCHEMA, synchronous="FULL", timeout=30.0,
                                  what="watermark store")

    def get(self, key: str) -> Any:
        """The stored value for ``key`` with its type restored, or None."""
        row = self._db.execute(
            "SELECT type, value FROM watermarks WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        kind, text = row
        decode = _DECODERS.get(kind)
        if decode is None:
            raise KinjectError(f"watermark of {key!r} in {self.path} has unknown type {kind!r}")
        return decode(text)

    def edge(self, key: str) -> set[str]:
        """The digests of the rows read at the stored value of ``key``."""
        rows = self._db.execute("SELECT digest FROM edge_rows WHERE key = ?", (key,))
        return {r[0] for r in rows}

    def put(self, key: str, value: Any, edge: Iterable[str] = ()) -> None:
        """Store ``value`` for ``key``, and ``edge`` (the digests of the rows read at that
        value) in place of the old ones, in one transaction (atomic and durable on return)."""
        kind, text = _encode(value)
        with sqlite.transaction(self._db, self._lock) as db:
            db.execute(
                "INSERT INTO watermarks (key, type, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET type = excluded.type, value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, kind, text, time.time()),
            )
            db.execute("DELETE FROM edge_rows WHERE key = ?", (key,))
            db.executemany("INSERT OR IGNORE INTO edge_rows (key, digest) VALUES (?, ?)",
                           ((key, d) for d in edge))
        _log.debug("watermark %s = %s", key, text)
