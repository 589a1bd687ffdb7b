from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kinject.demo_data import (
    DEMO_QUESTIONS,
    FACTS,
    LIGHTHOUSES,
    sample_records,
    write_sample_kb,
)
from kinject.ingest.normalise import detect_lang
from kinject.ingest.pipeline import IngestConfig, Ingested, ingest_record
from kinject.types import Record


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Record]:
    return {r.source_id: r for r in sample_records(tmp_path_factory.mktemp("kb"))}


@pytest.fixture(scope="module")
def extracted(records: dict[str, Record]) -> dict[str, Ingested]:
    pytest.importorskip("rapidocr")
    return {
        sid: ingest_record(r, IngestConfig(ocr_engine="rapidocr")) for sid, r in records.items()
    }


def _text(ingested: Ingested) -> str:
    return "\n".join(c.text for c in ingested.chunks)


def test_every_source_kind_is_present_with_stable_ids(records: dict[str, Record]) -> None:
    kinds = sorted(r.kind or "" for r in records.values())
    assert kinds == ["csv", "image", "image", "json", "json", "text", "text"]
    assert all(sid.startswith("demo/") for sid in records)
    assert records["demo/corvane_rock.png"].meta["caption"]


def test_sample_kb_is_deterministic(tmp_path: Path) -> None:
    one = [p.read_bytes() for p in write_sample_kb(tmp_path / "a")]
    two = [p.read_bytes() for p in write_sample_kb(tmp_path / "b")]
    assert one == two


def test_questions_cover_each_way_in() -> None:
    assert {q.via for q in DEMO_QUESTIONS} == {"csv", "json", "text", "ocr", "caption"}
    zh = [q for q in DEMO_QUESTIONS if q.lang == "zh"]
    assert zh and all(detect_lang(q.question) == "zh" for q in zh)
    assert zh[0].source_id == "demo/history_zh.txt"


@pytest.mark.slow
@pytest.mark.parametrize("question", DEMO_QUESTIONS, ids=lambda q: q.via + ":" + q.source_id)
def test_every_answer_is_in_the_text_ingested_from_its_source(
    question: object, extracted: dict[str, Ingested]
) -> None:
    from kinject.demo_data import DemoQuestion

    assert isinstance(question, DemoQuestion)
    text = _text(extracted[question.source_id]).lower()
    assert any(e.lower() in text for e in question.expected), (question, text)


@pytest.mark.slow
def test_ocr_and_caption_answers_are_nowhere_else(extracted: dict[str, Ingested]) -> None:
    for q in DEMO_QUESTIONS:
        if q.via not in ("ocr", "caption"):
            continue
        others = [
            sid
            for sid, ing in extracted.items()
            if sid != q.source_id and q.expected[0].lower() in _text(ing).lower()
        ]
        assert others == [], (q.question, others)
    scanned = extracted["demo/harbour_notice.png"]
    assert scanned.images[0].ocr_text and not scanned.images[0].caption
    picture = extracted["demo/corvane_rock.png"]
    assert picture.images[0].caption and all(c.meta["unit"] == "caption" for c in picture.chunks)


def test_sample_facts_are_consistent(records: dict[str, Record]) -> None:
    def text(sid: str) -> str:
        return records[sid].content.decode("utf-8")

    rows = {r["Lighthouse"]: r for r in csv.DictReader(io.StringIO(text("demo/lighthouses.csv")))}
    assert list(rows.values()) == list(LIGHTHOUSES)
    guild = json.loads(text("demo/guild.json"))
    history = text("demo/history.txt")
    # The guild's founding and seat agree between the JSON and the English history.
    assert str(guild["founded"]) == FACTS["guild_founded"] and FACTS["guild_founded"] in history
    assert f"{guild['headquarters']['building']} on {guild['headquarters']['island']}" in history
    # The oldest light in the Chinese text is the table's Fennick Light, lit the same year.
    first_lit = {name: int(r["First lit"]) for name, r in rows.items()}
    assert min(first_lit, key=first_lit.__getitem__) == "Fennick Light"
    assert f"芬尼克灯塔，于{rows['Fennick Light']['First lit']}年" in text("demo/history_zh.txt")
    # The caption's keeper is the table's keeper of Corvane Rock.
    caption = records["demo/corvane_rock.png"].meta["caption"]
    assert rows["Corvane Rock"]["Keeper"] in caption
    # Ferry stops are islands of the isles, and the Chinese crossing time matches the JSON.
    islands = {r["Island"] for r in rows.values()}
    ferries = json.loads(text("demo/ferries.json"))
    assert all(set(f["stops"]) <= islands for f in ferries)
    brinmoor = next(f for f in ferries if f["route"] == "Brinmoor to Saltreach")
    assert brinmoor["crossing_minutes"] == 55 and "五十五分钟" in text("demo/history_zh.txt")
