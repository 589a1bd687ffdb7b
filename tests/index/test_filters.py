"""Metadata filters: parsing, validation, and filtered search in every mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.filters import SearchFilters, parse_time
from kinject.index.text_index import TextIndex, TextIndexConfig
from kinject.types import Chunk, content_hash

DAY = 86_400.0
JAN_2024 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def test_parse_reads_every_key() -> None:
    f = SearchFilters.parse(["kind=csv,tsv", "lang=zh", "source=kb/", "since=2024-01-01",
                             "until=2024-01-31", "tag=Birds", "tag=sea"])
    assert f.kinds == ("csv", "tsv") and f.langs == ("zh",) and f.source_prefix == "kb/"
    assert f.since == JAN_2024
    assert JAN_2024 + 30 * DAY < (f.until or 0) < JAN_2024 + 31 * DAY  # the whole last day
    assert f.tags == ("birds", "sea")
    assert SearchFilters.parse(["since=1700000000"]).since == 1_700_000_000.0
    assert parse_time("2024-01-01T01:00:00+01:00") == JAN_2024
    assert SearchFilters.parse([]).empty and not f.empty


@pytest.mark.parametrize("items, message", [
    (["kind=movie"], "unknown kind 'movie'"),
    (["lang=fr"], "unknown lang 'fr'"),
    (["colour=red"], "unknown filter key 'colour'"),
    (["kind"], "not key=value"),
    (["tag="], "empty value"),
    (["since=last week"], "ISO date"),
    (["since=2024-02-01", "until=2024-01-01"], "is after until"),
    (["source=a", "source=b"], "given twice"),
])
def test_bad_filters_name_the_problem(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchFilters.parse(items)


def test_constructor_validates() -> None:
    with pytest.raises(TypeError, match="tuple of strings"):
        SearchFilters(kinds="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        SearchFilters(since=float("nan"))
    with pytest.raises(ValueError, match="source_prefix"):
        SearchFilters(source_prefix="")
    assert SearchFilters.coerce({"kinds": ["csv"]}) == SearchFilters(kinds=("csv",))
    assert SearchFilters.coerce(["lang=en"]) == SearchFilters(langs=("en",))
    assert SearchFilters.coerce(None) is None


def test_matches_chunks_by_meta() -> None:
    chunk = Chunk(chunk_id="c", doc_id="d", source_id="kb/birds/1", text="t", lang="en",
                  kind="markdown", meta={"ts": JAN_2024 + DAY, "tags": "Birds, sea"})
    assert SearchFilters(kinds=("markdown",), langs=("en",), source_prefix="kb/",
                         since=JAN_2024, until=JAN_2024 + 2 * DAY,
                         tags=("birds", "sea")).matches(chunk)
    assert not SearchFilters(kinds=("csv",)).matches(chunk)
    assert not SearchFilters(source_prefix="kb/fish").matches(chunk)
    assert not SearchFilters(since=JAN_2024 + 2 * DAY).matches(chunk)
    assert not SearchFilters(tags=("birds", "land")).matches(chunk)
    untimed = Chunk(chunk_id="c", doc_id="d", source_id="s", text="t")
    assert not SearchFilters(until=JAN_2024).matches(untimed)  # no time: not in any range


def _add(index: TextIndex, emb: HashEmbedder, source_id: str, text: str, *, kind: str = "text",
         lang: str = "en", ts: float | None = None, tags: list[str] | None = None) -> None:
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id, source_id=source_id,
                  text=text, kind=kind, lang=lang, meta={"tags": tags} if tags else {})
    index.apply([SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                              vectors=emb.encode([text]), embedder=emb.name, ts=ts)])


@pytest.mark.parametrize("mode", ["hybrid", "vector", "bm25"])
def test_filters_apply_in_every_mode(tmp_path: Path, hash_embedder: HashEmbedder,
                                     mode: str) -> None:
    # Few candidates per retriever: a selective filter must fall back to an exact scan.
    config = TextIndexConfig(overfetch=1, min_candidates=2)
    with TextIndex(tmp_path, hash_embedder, config=config) as index:
        for i in range(30):
            _add(index, hash_embedder, f"kb/river/{i}", f"river otters report {i}",
                 ts=JAN_2024 - DAY)
        _add(index, hash_embedder, "sheets/otters", "otters report sheet", kind="csv",
             ts=JAN_2024 + DAY)
        _add(index, hash_embedder, "zh/otters", "水獭 otters report", lang="mixed",
             ts=JAN_2024 + 2 * DAY, tags=["mammals"])

        def ids(*items: str) -> list[str]:
            return [h.source_id for h in
                    index.search("otters report", 5, SearchFilters.parse(items), mode)]

        assert ids("kind=csv") == ["sheets/otters"]
        assert ids("lang=mixed") == ["zh/otters"]
        assert ids("tag=mammals") == ["zh/otters"]
        assert set(ids("since=2024-01-01")) == {"sheets/otters", "zh/otters"}
        assert ids("until=2023-12-31", "source=kb/river/1") and all(
            s.startswith("kb/river/1") for s in ids("until=2023-12-31", "source=kb/river/1"))
        assert ids("source=nowhere/") == []
        assert len(ids()) == 5


def test_vector_search_with_filters(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        _add(index, hash_embedder, "a", "falcon nests", kind="markdown")
        _add(index, hash_embedder, "b", "falcon nests again")
        vec = hash_embedder.encode(["falcon nests"])[0]
        assert [h.source_id for h in index.search_vector(vec, 5)][:1] == ["a"]
        assert [h.source_id for h in index.search_vector(
            vec, 5, SearchFilters(kinds=("text",)))] == ["b"]
