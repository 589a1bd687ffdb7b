"""Contradicting structured sources: both kept, the conflict listed, the newer one searched."""

from __future__ import annotations

import json
from pathlib import Path

from kinject.index.changes import SourceUpdate
from kinject.index.conflicts import extract_facts, read_conflicts, store_conflicts
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.index.visibility import hidden_chunks, superseded_by
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record, content_hash

CITIES_2020 = b"city,population,country\nGullspire,41000,Norland\nTessel,900,Norland\n"
CITIES_2023 = b"City,Population,Country\nGullspire,\"43,500\",Norland\nTessel,900,Norland\n"


def _update(emb: HashEmbedder, record: Record) -> SourceUpdate:
    if record.op == "delete":
        return SourceUpdate(op="delete", source_id=record.source_id, embedder=emb.name)
    chunks = tuple(ingest_record(record, IngestConfig(ocr_engine="none")).chunks)
    return SourceUpdate(op="upsert", source_id=record.source_id, chunks=chunks,
                        vectors=emb.encode([c.text for c in chunks]),
                        content_hash=content_hash(record.content), embedder=emb.name,
                        ts=record.ts)


def _texts(index: TextIndex, query: str) -> list[str]:
    return [h.text for h in index.search(query, 10)]


def test_the_newer_source_wins_search_and_the_conflict_is_listed(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    old = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_600_000_000.0)
    new = Record("census/2023.csv", kind="csv", content=CITIES_2023, ts=1_700_000_000.0)
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, old)])
        assert any("41000" in t for t in _texts(index, "Gullspire population"))
        index.apply([_update(hash_embedder, new)])
        texts = _texts(index, "Gullspire population")
        assert any("43,500" in t for t in texts)
        assert not any("41000" in t for t in texts)  # the older value is not retrieved
        assert index.docstore is not None
        assert index.docstore.count() == 4  # ... but both rows are kept
        (conflict,) = store_conflicts(index.docstore)
        assert (conflict.entity, conflict.field) == ("Gullspire", "Population")
        assert [(v["value"], v["source_id"]) for v in conflict.values] == [
            ("43,500", "census/2023.csv"), ("41000", "census/2020.csv")]
        assert conflict.winner["ts"] == 1_700_000_000.0
        # Tessel agrees in both: no conflict, and its rows are exact duplicates (one searched)
        assert store_conflicts(index.docstore, "tessel") == []
        assert sum("Tessel" in t for t in _texts(index, "Tessel population")) == 1
    # listed without opening the index (the CLI reads the file)
    (listed,) = read_conflicts(tmp_path / "docstore.sqlite", "GULLSPIRE")
    assert listed.to_dict()["winner"]["source_id"] == "census/2023.csv"


def test_an_older_record_arriving_late_does_not_win(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    new = Record("census/2023.csv", kind="csv", content=CITIES_2023, ts=1_700_000_000.0)
    old = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_600_000_000.0)
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, new)])
        index.apply([_update(hash_embedder, old)])
        texts = _texts(index, "Gullspire population")
        assert any("43,500" in t for t in texts) and not any("41000" in t for t in texts)
        assert index.docstore is not None
        loser = next(c for c in ingest_record(old).chunks if "Gullspire" in c.text)
        winner = next(c for c in ingest_record(new).chunks if "Gullspire" in c.text)
        assert superseded_by(index.docstore, loser.chunk_id) == winner.chunk_id
        assert hidden_chunks(index.docstore, "census/2020.csv")[loser.chunk_id] == {
            "superseded_by": winner.chunk_id}
        assert hidden_chunks(index.docstore, "census/2023.csv") == {}


def test_deleting_the_newer_source_brings_the_older_value_back(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    old = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_600_000_000.0)
    new = Record("census/2023.csv", kind="csv", content=CITIES_2023, ts=1_700_000_000.0)
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, old), _update(hash_embedder, new)])
        assert not any("41000" in t for t in _texts(index, "Gullspire population"))
        index.apply([_update(hash_embedder, Record("census/2023.csv", op="delete"))])
        assert any("41000" in t for t in _texts(index, "Gullspire population"))
        assert index.docstore is not None
        assert store_conflicts(index.docstore) == []
    # and the decision survived the restart
    with TextIndex(tmp_path, hash_embedder) as index:
        assert any("41000" in t for t in _texts(index, "Gullspire population"))


def test_republishing_the_older_source_makes_it_the_newer_one(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    old = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_600_000_000.0)
    new = Record("census/2023.csv", kind="csv", content=CITIES_2023, ts=1_700_000_000.0)
    again = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_800_000_000.0)
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, old), _update(hash_embedder, new)])
        index.apply([_update(hash_embedder, again)])  # same rows, stated again later
        texts = _texts(index, "Gullspire population")
        assert any("41000" in t for t in texts) and not any("43,500" in t for t in texts)


def test_sql_json_and_csv_rows_about_one_entity_are_compared(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    sql_row = Record("sql/cities/Gullspire", kind="sql", ts=1_650_000_000.0,
                     content=json.dumps({"name": "Gullspire", "population": 42000,
                                         "mayor": "Ada Brisk"}).encode(),
                     meta={"table": "cities", "key": "Gullspire"})
    js = Record("atlas.json", kind="json", ts=1_660_000_000.0, content=json.dumps(
        [{"name": "Gullspire", "mayor": "Orla Fenn"}, {"name": "Tessel", "mayor": "Ida Moor"}]
    ).encode())
    csv = Record("census/2020.csv", kind="csv", content=CITIES_2020, ts=1_600_000_000.0)
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, r) for r in (csv, sql_row, js)])
        assert index.docstore is not None
        found = {(c.entity, c.field): [v["value"] for v in c.values]
                 for c in store_conflicts(index.docstore)}
        assert found == {("Gullspire", "population"): ["42000", "41000"],
                         ("Gullspire", "mayor"): ["Orla Fenn", "Ada Brisk"]}
        texts = _texts(index, "Gullspire mayor population")
        # the JSON item is newest; the SQL row lost on mayor, the CSV row on population
        assert any("Orla Fenn" in t for t in texts)
        assert not any("Ada Brisk" in t for t in texts)
        assert not any("41000" in t for t in texts)


def test_rows_of_one_source_and_prose_never_conflict(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    twice = Record("log.csv", kind="csv", ts=1.0,
                   content=b"city,population\nGullspire,41000\nGullspire,43500\n")
    prose = Record("notes.txt", kind="text", ts=2.0,
                   content=b"Gullspire has a population of about 50000 people.")
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, twice), _update(hash_embedder, prose)])
        assert index.docstore is not None
        assert store_conflicts(index.docstore) == []
        assert len(index) == 3


def test_entities_and_fields_of_structured_chunks() -> None:
    (row,) = ingest_record(Record("t.csv", kind="csv",
                                  content=b"Country,Name,Area\nNorland,Gullspire,12 km\n")).chunks
    facts = extract_facts(row)
    assert facts is not None and facts.entity_text == "Gullspire"  # a "name" column wins
    assert set(facts.fields) == {"country", "area"}
    (item,) = ingest_record(Record("a.json", kind="json",
                                   content=b'{"id": "GS-1", "height": 30}')).chunks
    facts = extract_facts(item)
    assert facts is not None and facts.entity == "gs-1" and "height" in facts.fields
    (text,) = ingest_record(Record("n.txt", kind="text", content=b"Name: Gullspire.")).chunks
    assert extract_facts(text) is None


def test_a_first_column_that_repeats_is_not_taken_for_an_entity(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    # "country" comes first and repeats: it names no single row, so nothing conflicts,
    # although both files have a Norland row with another city and population.
    a = Record("a.csv", kind="csv", ts=1.0,
               content=b"country,city,population\nNorland,Gullspire,41000\nNorland,Tessel,900\n")
    b = Record("b.csv", kind="csv", ts=2.0,
               content=b"country,city,population\nNorland,Brinmore,7000\nSudmark,Osk,300\n")
    # ... while ids are a poorer entity than names: rows numbered alike are not compared
    c = Record("c.csv", kind="csv", ts=3.0, content=b"id,name,mayor\n1,Gullspire,Ada Brisk\n")
    d = Record("d.csv", kind="csv", ts=4.0, content=b"id,name,mayor\n1,Tessel,Ida Moor\n")
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, r) for r in (a, b, c, d)])
        assert index.docstore is not None
        assert store_conflicts(index.docstore) == []
        assert len(index) == 6
