"""The corpus store's SQLite tables (chunks, examples, cycle state, replay slots, LM
paraphrase candidates) and how a chunk or an example row reads back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kinject.types import Chunk, TrainingExample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    text TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    lang TEXT NOT NULL,
    kind TEXT NOT NULL,
    meta TEXT NOT NULL,
    cycle INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source_id);
CREATE TABLE IF NOT EXISTS examples (
    example_id TEXT PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    completion TEXT NOT NULL,
    form TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    lang TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_source ON examples(source_id);
CREATE INDEX IF NOT EXISTS examples_cycle ON examples(cycle);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replay (slot INTEGER PRIMARY KEY, example_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS replay_example ON replay(example_id);
CREATE TABLE IF NOT EXISTS replay_offered (example_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS paraphrases (
    chunk_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    sentence TEXT NOT NULL,
    text TEXT NOT NULL,
    kept INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (chunk_id, sentence, text)
);
CREATE INDEX IF NOT EXISTS paraphrases_source ON paraphrases(source_id);
"""
_EXAMPLE_COLUMNS = "example_id, chunk_id, source_id, prompt, completion, form, cycle, lang"
_CHUNK_COLUMNS = "chunk_id, doc_id, source_id, text, ordinal, lang, kind, meta, cycle"


def _row_to_chunk(r: Sequence[Any]) -> tuple[Chunk, int]:
    """A row of ``_CHUNK_COLUMNS``: the chunk and the cycle it first appeared in."""
    return (Chunk(r[0], r[1], r[2], r[3], ordinal=r[4], lang=r[5], kind=r[6],
                  meta=json.loads(r[7])), int(r[8]))


def _row_to_example(r: Sequence[object]) -> TrainingExample:
    return TrainingExample(example_id=str(r[0]), chunk_id=str(r[1]), source_id=str(r[2]),
                           prompt=str(r[3]), completion=str(r[4]), form=str(r[5]),
                           cycle=int(r[6]), lang=str(r[7]))  # type: ignore[call-overload]
