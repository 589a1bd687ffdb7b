"""Read mode, the default, through RagService: MiniLM + BM25 retrieve, the reader model
(Qwen2.5-0.5B on CTranslate2, from the shared model cache) chooses a passage and reads it.

The facts, their kinds and the questions' wording are this file's own: no benchmark family
and no prompt example uses them, and no code of kinject knows any of their words."""

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.text_index import TextIndex
from kinject.models import load_generator
from kinject.rag.reader import Ct2Reader
from kinject.rag.reader_model import load_reader
from kinject.rag.service import RagConfig, RagService
from kinject.types import Answer, Chunk, content_hash

pytestmark = pytest.mark.slow

KB = {
    "kb/observatory": "The Quellmoor observatory stands on a basalt ridge above the village "
                      "of Ashby Fell. Its copper dome opens on clear nights, and its main "
                      "telescope is a 61-centimetre reflector built in 1932 by the instrument "
                      "maker Harriet Vane-Ostler.",
    "kb/bakery": "Pellow's bakery on Ropewalk Lane bakes rye loaves with a sourdough starter "
                 "kept alive since 1958. The bakery closes every Monday and opens at six on "
                 "the other days.",
    "kb/orchard": "The Brackwater orchard grows 212 varieties of cider apple on sloping "
                  "clay soil, and its oldest tree was grafted in 1871.",
    "kb/glacier": "松岩冰川位于雾岭北坡，每年后退约十二米，融水汇入青溪湖。",
}


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, minilm: Any, reader_cache: Path,
        tiny_lm_dir: Path) -> Iterator[RagService]:
    index = TextIndex(tmp_path_factory.mktemp("idx"), minilm).open()
    index.apply([SourceUpdate(
        op="upsert", source_id=sid,
        chunks=(Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                      text=text),),
        vectors=minilm.encode([text]), embedder=minilm.name) for sid, text in KB.items()])
    reader = Ct2Reader(load_reader("qwen2.5-0.5b", reader_cache, "cpu"))
    # The generator is never asked in read mode on route rag: a tiny random one shows that.
    generator = load_generator(str(tiny_lm_dir), tmp_path_factory.mktemp("m"), "cpu", "auto")
    yield RagService(index, generator, RagConfig(cache_size=0), reader=lambda: reader)
    index.close()


def _quote(answer: Answer) -> str:
    return re.sub(r"\s*\[\d+\]", "", answer.text).strip()


@pytest.mark.parametrize(("question", "source", "expected"), [
    ("Who made the big telescope at Quellmoor?", "kb/observatory", "Harriet Vane-Ostler"),
    ("On which weekday can you not buy bread at Pellow's?", "kb/bakery", "Monday"),
    ("How many kinds of cider apple does the Brackwater orchard grow?", "kb/orchard", "212"),
])
def test_answers_a_fact_with_the_passage_it_comes_from(rag: RagService, question: str,
                                                        source: str, expected: str) -> None:
    answer = rag.ask(question)
    assert not answer.abstained and expected in answer.text, answer.text
    assert [c.source_id for c in answer.citations] == [source]
    assert answer.text.endswith("[1]") and answer.citations[0].n == 1
    assert len(_quote(answer)) < len(KB[source]) / 2, "an answer, not the passage restated"


def test_an_imperative_is_answered_from_its_passage(rag: RagService) -> None:
    answer = rag.ask("Describe the Quellmoor observatory.")
    assert not answer.abstained, answer.text
    assert answer.citations[0].source_id == "kb/observatory"
    assert re.search(r"basalt|dome|telescope|Ashby Fell|reflector", answer.text), answer.text


def test_a_yes_no_question_is_answered_and_cites_its_evidence(rag: RagService) -> None:
    answer = rag.ask("Does Pellow's bakery open on Mondays?")
    assert not answer.abstained, answer.text
    assert answer.citations[0].source_id == "kb/bakery"


def test_a_chinese_question_is_answered_in_chinese_from_its_passage(rag: RagService) -> None:
    answer = rag.ask("松岩冰川的融水流进哪个湖？")
    assert not answer.abstained and "青溪湖" in answer.text, answer.text
    assert answer.citations[0].source_id == "kb/glacier"


@pytest.mark.parametrize("question", [
    "When was the Dunsley orchard planted?",
    "What does a ticket to the Marlow swimming baths cost?",
    "白鹭桥每天几点关闭？",
    # a namesake of the indexed Quellmoor observatory, asked the same relation: the reader's
    # name check (the passage must name what the question names) keeps it out
    "Who built the telescope of the Kirkhallow observatory?",
    # a Chinese namesake of the indexed glacier: the model's copy of the name runs on into
    # an answer, and what it copied of the question is still checked as the name
    "雪峰冰川每年后退多少米？",
])
def test_a_question_about_something_not_in_the_index_abstains(rag: RagService,
                                                               question: str) -> None:
    answer = rag.ask(question)
    assert answer.abstained and not answer.citations, answer.text
    assert answer.text in ("Not in the knowledge base.", "知识库中没有相关内容。")


def test_a_streamed_reading_is_one_piece_equal_to_the_answer(rag: RagService) -> None:
    items = list(rag.ask_stream("In what year was the oldest Brackwater apple tree grafted?"))
    assert len(items) == 2 and isinstance(items[-1], Answer)
    assert items[0] == items[-1].text and "1871" in items[-1].text


def test_concurrent_questions_share_one_reader_call(rag: RagService) -> None:
    """Questions gathered in one batch are read together: one reader call (its passage
    choice and its answers) for the batch, each question with its own answer and source."""
    batched = RagService(rag.index, rag.generator, RagConfig(cache_size=0,
                                                             batch_window_ms=500),
                         reader=lambda: rag._reader_model())
    reader = rag._reader_model()
    assert isinstance(reader, Ct2Reader)
    questions = {"Who made the big telescope at Quellmoor?": ("kb/observatory", "Harriet"),
                 "How many kinds of cider apple does the Brackwater orchard grow?":
                     ("kb/orchard", "212"),
                 "松岩冰川的融水流进哪个湖？": ("kb/glacier", "青溪湖")}
    calls = reader.calls
    results: dict[str, Answer] = {}
    start = threading.Barrier(len(questions))

    def ask(q: str) -> None:
        start.wait()
        results[q] = batched.ask(q)

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for q, (source, expected) in questions.items():
        assert expected in results[q].text and results[q].citations[0].source_id == source
    assert batched._batcher.batches == 1 and batched.model_calls == 1
    # one call copying the names asked about and one generation: each question's name is in
    # one passage only, so no passage needs weighing
    assert reader.calls - calls == 2
