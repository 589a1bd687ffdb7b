"""Extractive answering: question analysis, clauses, and spans chosen by the clause a question
asks about and the kind of answer it expects (hash embedder, tiny random LM: the choice must
come from the passage's structure, not from the model)."""

from pathlib import Path
from typing import Any

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.models import load_generator
from kinject.rag.extract import clause_spans
from kinject.rag.questions import analyse
from kinject.rag.sentences import key_terms, split_clauses
from kinject.rag.service import RagConfig, RagService
from kinject.types import Chunk, content_hash

BIO_EN = ("Brenna Kettering was born in Oldharbour in 1950 and studied glass sculpture before "
          "joining Verdant Mills. In 1984 Brenna moved to Duskmoor.")
BIO_ZH = "杨梓涵于1973年出生在大理，大学学习海洋生物学，毕业后加入青岚仪器公司。"
COMPANY_ZH = "青岚科技由王建国于1999年创立，总部位于苏州，主要生产园艺工具。"


@pytest.fixture()
def rag(hash_rag: Any) -> RagService:
    return hash_rag({"kb/brenna": BIO_EN, "kb/yang": BIO_ZH, "kb/qinglan": COMPANY_ZH,
                     "kb/ferry": "The ferry to Vask leaves at noon.",
                     "kb/route": "The ferry from Saltreach to Brinmoor is the Morrow Wren.",
                     "kb/boat": "往返泉州和厦门的渡轮是晨鹭号。"})


def test_question_types_in_english_and_chinese() -> None:
    assert analyse("What year was Ada Quill born?").answer_type == "number"
    assert analyse("When did the ferry leave?").answer_type == "number"
    assert analyse("Who founded the guild?").answer_type == "person"
    assert analyse("In which town is Ada Quill based?").answer_type == "place"
    assert analyse("What did Ada Quill study?").answer_type == "thing"
    assert analyse("杨梓涵是哪一年出生的？").answer_type == "number"
    assert analyse("青岚科技的创始人是谁？").answer_type == "person"
    assert analyse("杨梓涵的出生地是哪里？").answer_type == "place"
    for writes in ("Why did Ada Quill move?", "Is Ada Quill a sculptor?", "为什么杨梓涵搬家？"):
        assert analyse(writes).needs_writing, writes
    assert not analyse("Where was Ada Quill born?").needs_writing
    assert analyse("What did Ada Quill's sister study?").asked == "What did sister study?"


def test_sentences_are_cut_into_clauses_one_fact_each() -> None:
    assert split_clauses(BIO_EN.split(". ")[0]) == [
        "Brenna Kettering was born in Oldharbour in 1950", "studied glass sculpture",
        "joining Verdant Mills"]
    assert split_clauses(BIO_ZH) == ["杨梓涵于1973年出生在大理", "大学学习海洋生物学",
                                     "毕业后加入青岚仪器公司"]
    assert split_clauses("The ferry runs between Vask and Saltreach.") == [
        "The ferry runs between Vask and Saltreach"]


def test_chinese_questions_name_their_topic() -> None:
    assert key_terms("青岚科技的创始人是谁？") == {"青岚科技"}
    assert key_terms("青岚科技是谁创立的？") == {"青岚科技"}
    assert key_terms("杨梓涵的出生地是哪里？") == {"杨梓涵"}
    assert key_terms("什么是量子化学？") == set()


def test_a_chinese_name_is_never_cut_into_an_answer() -> None:
    spans = [s.text for s in clause_spans([BIO_ZH], analyse("杨梓涵是哪一年出生的？"))]
    assert spans and not any("涵" in s or "杨" in s for s in spans)


@pytest.mark.parametrize(("question", "expected"), [
    ("What year was Brenna Kettering born?", "1950"),
    ("Where was Brenna Kettering born?", "Oldharbour"),
    ("Which town did Brenna Kettering move to?", "Duskmoor"),
    ("杨梓涵是哪一年出生的？", "1973"),
    ("杨梓涵的出生地是哪里？", "大理"),
    ("青岚科技的创始人是谁？", "王建国"),
    # "A is B": the side with the question's names says which; the other side is the answer
    ("Which vessel runs between Saltreach and Brinmoor?", "Morrow Wren"),
    ("泉州和厦门之间坐什么船？", "晨鹭号"),
])
def test_factoid_answers_are_the_span_of_the_clause_asked_about(
        rag: RagService, question: str, expected: str) -> None:
    answer = rag.ask(question)
    span = answer.text.rsplit(" [", 1)[0]
    assert span.startswith(expected) and len(span) <= len(expected) + 1, answer.text  # 1973年
    assert answer.citations and span in answer.citations[0].snippet


def test_questions_that_need_words_are_written(rag: RagService) -> None:
    from kinject.rag.service import Question

    plans = rag._plan([Question("Why did Brenna Kettering move to Duskmoor?", 4, None, "rag",
                                "auto"),
                       Question("Where was Brenna Kettering born?", 4, None, "rag", "auto")])
    assert [p.kind for p in plans] == ["free", "span"]


def test_records_and_quoted_names_answer_in_auto_mode(
        tmp_path: Path, hash_embedder: HashEmbedder, tiny_lm_dir: Path) -> None:
    """A table's rows each name a keeper: the row of the lighthouse asked about answers. A
    JSON object's "field: value" lines answer by their field. A name the passage quotes is
    the answer, not the words that introduce it."""
    generator = load_generator(str(tiny_lm_dir), tmp_path / "models", "cpu", "auto")
    rows = [("Gullspire", "Brinmoor", "Senna Calloway"), ("Tessaly Point", "Tessaly",
             "Idris Vandermolen"), ("Corvane Rock", "Corvane", "Mabli Orrun")]
    docs = [(f"kb/lights/{i}", "csv", f"Lighthouse: {name}. Island: {island}. Keeper: {keeper}. "
             f"First lit: {1900 + i}.") for i, (name, island, keeper) in enumerate(rows)]
    docs += [("kb/ferry", "json", "route: Saltreach to Vask\ncrossing_minutes: 95\n"
              "vessel.name: Morrow Wren\nvessel.built: 2004"),
             ("kb/tea", "text", "岛上居民以种植一种名为“雾眉”的海盐茶而闻名。")]
    with TextIndex(tmp_path / "i", hash_embedder) as index:
        for sid, kind, text in docs:
            chunk = Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                          text=text, meta={"kind": kind})
            index.apply([SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                      vectors=hash_embedder.encode([text]),
                                      embedder=hash_embedder.name)])
        rag = RagService(index, generator, RagConfig(cache_size=0, lm_rerank=0, mode="auto",
                                                     min_relevance=-1.0))
        for question, want, source in (
                ("Who is the keeper of the Gullspire lighthouse?", "Senna Calloway",
                 "kb/lights/0"),
                ("Who keeps the Tessaly Point light?", "Idris Vandermolen", "kb/lights/1"),
                ("What is the name of the vessel on the Saltreach to Vask route?",
                 "Morrow Wren", "kb/ferry"),
                ("居民以种植哪种海盐茶而闻名？", "雾眉", "kb/tea")):
            answer = rag.ask(question)
            assert answer.text.rsplit(" [", 1)[0] == want, (question, answer.text)
            assert answer.citations[0].source_id == source
