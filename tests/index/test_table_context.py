"""A table's rows carry the table's name in their text: a question that names the file ("the
holidays list") finds its rows; the same row in two files is still one searched row."""

from __future__ import annotations

from pathlib import Path

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record, content_hash

HOLIDAYS = b"day,occasion\n2026-12-24,Christmas Eve\n2027-01-01,New Year's Day\n"
HOURS = b"site,opens,shuts\nGhent,08:00,17:00\nAarhus,07:30,16:00\n"


def _update(emb: HashEmbedder, record: Record) -> SourceUpdate:
    chunks = tuple(ingest_record(record, IngestConfig(ocr_engine="none")).chunks)
    return SourceUpdate(op="upsert", source_id=record.source_id, chunks=chunks,
                        vectors=emb.encode([c.text for c in chunks]),
                        content_hash=content_hash(record.content), embedder=emb.name)


def test_a_question_naming_the_csv_file_finds_its_rows(tmp_path: Path,
                                                      hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([
            _update(hash_embedder, Record("kb/holidays.csv", kind="csv", content=HOLIDAYS,
                                          meta={"filename": "holidays.csv"})),
            _update(hash_embedder, Record("kb/hours.csv", kind="csv", content=HOURS,
                                          meta={"filename": "opening_hours.csv"})),
        ])
        hits = index.search("What is on the holidays list?", 2, mode="bm25")
        assert [h.source_id for h in hits] == ["kb/holidays.csv"] * 2, hits
        assert {h.meta["row"]["occasion"] for h in hits} == {"Christmas Eve", "New Year's Day"}


def test_the_same_row_in_two_files_is_still_searched_once(tmp_path: Path,
                                                         hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([
            _update(hash_embedder, Record("kb/2026/holidays.csv", kind="csv", content=HOLIDAYS,
                                          meta={"filename": "holidays_2026.csv"})),
            _update(hash_embedder, Record("kb/copy/holidays.csv", kind="csv", content=HOLIDAYS,
                                          meta={"filename": "office_holidays.csv"})),
        ])
        hits = index.search("Christmas Eve occasion day", 10, mode="bm25")
        assert sum("Christmas Eve" in h.text for h in hits) == 1, [h.text for h in hits]
        assert hits[0].text.startswith("holidays_2026.csv\n")  # the first file's row
