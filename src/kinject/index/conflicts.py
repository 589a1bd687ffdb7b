"""Contradictions between structured sources: same entity, same field, different values.

A structured chunk (a CSV/TSV row, a SQL row, a JSON object or JSON-lines item) states
*facts*: ``(entity, field) = value``. The entity is what the row is about:

- SQL rows (``kinject ingest-sql``): the value of the key column (``meta["key"]``);
- CSV/TSV rows: the value of the first column named ``name``, ``title``, ``id`` or ``key``
  (in that order, any case; names travel between sources better than row numbers), else
  of the first column, when its values are unique within the source (a column that
  repeats, such as a country beside its cities, names no single row);
- JSON objects and items: the value of a top-level ``name``, ``title``, ``id`` or ``key``.

Entities and field labels are compared case-folded with spaces collapsed, values likewise
and numbers by value (``41,000`` equals ``41000``). When chunks of two *different* sources
give different values for the same entity and field, both stay in the docstore, the
conflict is listed in the ``conflicts`` table (every value with its source, chunk and
record timestamp) and the chunk of the newer record wins retrieval: every chunk that
disagrees with a newer one is *superseded* (kept, hidden from search) until the newer
source is deleted or changes. Ties on the timestamp go to the greater source id, so every
replica decides alike. Rows of one source never conflict with each other.

All tables live in the docstore's SQLite file and are written in the same transaction as
the chunks they describe.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinject.index.docstore import Docstore
from kinject.types import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    chunk_id    TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_text TEXT NOT NULL,
    field       TEXT NOT NULL,
    field_text  TEXT NOT NULL,
    value       TEXT NOT NULL,
    ts          REAL NOT NULL,
    PRIMARY KEY (chunk_id, field)
);
CREATE INDEX IF NOT EXISTS facts_entity ON facts(entity);
CREATE INDEX IF NOT EXISTS facts_source ON facts(source_id);
CREATE TABLE IF NOT EXISTS superseded (
    chunk_id      TEXT PRIMARY KEY,
    superseded_by TEXT NOT NULL,
    entity        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS superseded_entity ON superseded(entity);
CREATE TABLE IF NOT EXISTS conflicts (
    entity      TEXT NOT NULL,
    field       TEXT NOT NULL,
    entity_text TEXT NOT NULL,
    field_text  TEXT NOT NULL,
    "values"    TEXT NOT NULL,
    winner      TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (entity, field)
);
"""

ENTITY_LABELS = ("name", "title", "id", "key")
_STRUCTURED_KINDS = frozenset({"csv", "tsv", "sql", "json", "jsonl"})
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:[,_ ]\d{3})+|\d+)(?:\.\d+)?")
# "path: value" lines, as the JSON parser writes them (nested paths use dots and [i]).
_JSON_LINE = re.compile(r"^([^:\n]{1,120}?): (.+)$", re.MULTILINE)
MAX_FIELDS = 64
MAX_VALUE_CHARS = 500


def _key(text: str) -> str:
    return _SPACES.sub(" ", str(text)).strip().casefold()


def _value_key(value: str) -> str:
    """A value as compared: numbers by value, text case-folded, a final full stop dropped."""
    text = _key(value).rstrip(".。").strip()
    if _NUMBER.fullmatch(text):
        number = float(re.sub(r"[,_ ]", "", text))
        return repr(int(number)) if number.is_integer() else repr(number)
    return text


@dataclass(frozen=True)
class Facts:
    """What one structured chunk states about one entity."""

    entity: str
    entity_text: str
    fields: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (label, value)
    # False when the entity is only a row's first column (trusted if unique in its source).
    keyed: bool = True


def extract_facts(chunk: Chunk) -> Facts | None:
    """The entity and field values a structured chunk states, or None for prose."""
    meta = chunk.meta
    row = meta.get("row")
    if isinstance(row, Mapping) and row:
        return _row_facts(chunk, row)
    if chunk.kind in ("json", "jsonl") and meta.get("unit") in ("item", "file"):
        return _json_facts(chunk.text)
    return None


def _scalar_items(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for label, value in pairs:
        if isinstance(value, bool):
            value = "yes" if value else "no"
        if isinstance(value, str | int | float) and str(value).strip():
            out.append((str(label).strip(), str(value).strip()[:MAX_VALUE_CHARS]))
    return out


def _row_facts(chunk: Chunk, row: Mapping[str, Any]) -> Facts | None:
    items = _scalar_items(row.items())
    if not items:
        return None
    if chunk.kind == "sql" and str(chunk.meta.get("key") or "").strip():
        entity = str(chunk.meta["key"]).strip()
        # The key column restates the entity; it cannot conflict with itself.
        items = [(k, v) for k, v in items if _value_key(v) != _value_key(entity)]
    else:
        labels = [_key(k) for k, _ in items]
        named = next((labels.index(name) for name in ENTITY_LABELS if name in labels), None)
        pick = 0 if named is None else named
        entity = items[pick][1]
        facts = _facts(entity, items[:pick] + items[pick + 1 :])
        if facts is not None and named is None:
            facts = Facts(facts.entity, facts.entity_text, facts.fields, keyed=False)
        return facts
    return _facts(entity, items)


def _json_facts(text: str) -> Facts | None:
    items = [(m.group(1).strip(), m.group(2).strip()) for m in _JSON_LINE.finditer(text)]
    labels = [_key(k) for k, _ in items]
    pick = next((labels.index(name) for name in ENTITY_LABELS if name in labels), None)
    if pick is None:
        return None  # an object that names nothing is not about an entity we can match
    entity = items[pick][1]
    return _facts(entity, items[:pick] + items[pick + 1 :])


def _facts(entity: str, items: Sequence[tuple[str, str]]) -> Facts | None:
    if not _key(entity) or not items:
        return None
    fields: dict[str, tuple[str, str]] = {}
    for label, value in items[:MAX_FIELDS]:
        fields.setdefault(_key(label), (label, value))
    return Facts(_key(entity), entity.strip(), fields)


@dataclass(frozen=True)
class Conflict:
    """Different values for one entity and field; ``values`` newest first (the winner)."""

    entity: str
    field: str
    values: tuple[dict[str, Any], ...]
    updated_at: float

    @property
    def winner(self) -> dict[str, Any]:
        return self.values[0]

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "field": self.field, "values": list(self.values),
                "winner": self.winner, "updated_at": self.updated_at}


class ConflictTracker:
    """Keeps ``facts``, ``superseded`` and ``conflicts`` in step with the docstore's chunks.

    Every method takes the open docstore transaction, so a batch's chunks and its
    conflicts commit together.
    """

    @staticmethod
    def create(db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)

    @staticmethod
    def add(db: sqlite3.Connection, chunks: Sequence[Chunk], ts: float) -> set[str]:
        """Record the facts of new chunks; return the entities they touch."""
        touched: set[str] = set()
        rows = []
        found = [(c, extract_facts(c) if c.kind in _STRUCTURED_KINDS else None) for c in chunks]
        seen = Counter((c.source_id, f.entity) for c, f in found if f is not None)
        for chunk, facts in found:
            if facts is None:
                continue
            if not facts.keyed and (seen[(chunk.source_id, facts.entity)] > 1 or db.execute(
                    "SELECT 1 FROM facts WHERE source_id=? AND entity=? AND chunk_id<>? LIMIT 1",
                    (chunk.source_id, facts.entity, chunk.chunk_id)).fetchone()):
                continue  # the first column repeats in this source: it is not a key
            touched.add(facts.entity)
            rows += [(chunk.chunk_id, chunk.source_id, facts.entity, facts.entity_text, f,
                      label, value, ts) for f, (label, value) in facts.fields.items()]
        db.executemany("INSERT OR REPLACE INTO facts VALUES (?,?,?,?,?,?,?,?)", rows)
        return touched

    @staticmethod
    def retime(db: sqlite3.Connection, source_id: str, ts: float) -> set[str]:
        """A source re-published (changed or not) states its facts again at ``ts``."""
        entities = {e for (e,) in db.execute(
            "SELECT DISTINCT entity FROM facts WHERE source_id=? AND ts<>?", (source_id, ts))}
        if entities:
            db.execute("UPDATE facts SET ts=? WHERE source_id=?", (ts, source_id))
        return entities

    @staticmethod
    def forget(db: sqlite3.Connection, chunk_ids: Sequence[str]) -> set[str]:
        """Drop the facts of removed chunks; return the entities they touched."""
        touched: set[str] = set()
        for cid in chunk_ids:
            touched |= {e for (e,) in db.execute(
                "SELECT DISTINCT entity FROM facts WHERE chunk_id=?", (cid,))}
            db.execute("DELETE FROM facts WHERE chunk_id=?", (cid,))
            db.execute("DELETE FROM superseded WHERE chunk_id=?", (cid,))
        return touched

    @staticmethod
    def resolve(db: sqlite3.Connection, entities: Iterable[str]) -> None:
        """Recompute the conflicts and the superseded chunks of ``entities``."""
        now = time.time()
        for entity in sorted(set(entities)):
            rows = db.execute(
                "SELECT chunk_id, source_id, entity_text, field, field_text, value, ts "
                "FROM facts WHERE entity=?", (entity,)).fetchall()
            db.execute("DELETE FROM superseded WHERE entity=?", (entity,))
            db.execute("DELETE FROM conflicts WHERE entity=?", (entity,))
            by_field: dict[str, list[tuple[Any, ...]]] = {}
            for r in rows:
                by_field.setdefault(r[3], []).append(r)
            beaten: dict[str, tuple[float, str, str]] = {}  # loser chunk -> newest winner
            for fkey, group in by_field.items():
                if len({_value_key(r[5]) for r in group}) < 2:
                    continue
                group.sort(key=lambda r: (r[6], r[1], r[0]), reverse=True)  # newest first
                sources_disagree = False
                for loser in group:
                    for winner in group:
                        if ((winner[6], winner[1]) > (loser[6], loser[1])
                                and winner[1] != loser[1]
                                and _value_key(winner[5]) != _value_key(loser[5])):
                            sources_disagree = True
                            best = beaten.get(loser[0])
                            if best is None or (winner[6], winner[1]) > best[:2]:
                                beaten[loser[0]] = (winner[6], winner[1], winner[0])
                            break
                if not sources_disagree:
                    continue
                values = [{"value": r[5], "source_id": r[1], "chunk_id": r[0], "ts": r[6]}
                          for r in group]
                db.execute("INSERT INTO conflicts VALUES (?,?,?,?,?,?,?)",
                           (entity, fkey, group[0][2], group[0][4],
                            json.dumps(values, ensure_ascii=False), group[0][1], now))
            db.executemany("INSERT OR REPLACE INTO superseded VALUES (?,?,?)",
                           [(loser, w[2], entity) for loser, w in beaten.items()])


def list_conflicts(db: sqlite3.Connection, entity: str | None = None) -> list[Conflict]:
    """Every listed conflict (of ``entity`` when given), by entity and field."""
    sql = 'SELECT entity_text, field_text, "values", updated_at FROM conflicts'
    args: tuple[Any, ...] = ()
    if entity is not None:
        sql += " WHERE entity=?"
        args = (_key(entity),)
    try:
        rows = db.execute(sql + " ORDER BY entity, field", args).fetchall()
    except sqlite3.OperationalError as exc:  # an index that never held a structured row
        if "no such table" in str(exc):
            return []
        raise
    return [Conflict(r[0], r[1], tuple(json.loads(r[2])), float(r[3])) for r in rows]


def store_conflicts(store: Docstore, entity: str | None = None) -> list[Conflict]:
    """Conflicts recorded in an open docstore (of ``entity`` when given)."""
    with store.transaction() as db:
        return list_conflicts(db, entity)


def read_conflicts(docstore_path: Path, entity: str | None = None) -> list[Conflict]:
    """Conflicts of the docstore file at ``docstore_path`` (read only; no models loaded)."""
    if not docstore_path.is_file():
        return []
    db = sqlite3.connect(f"file:{docstore_path}?mode=ro", uri=True)
    try:
        return list_conflicts(db, entity)
    finally:
        db.close()
