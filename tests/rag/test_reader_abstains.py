"""Questions about things nobody wrote about, over a knowledge base whose passages name a part of
them (the place of an event that never happened): the reader abstains, and still answers what
the same passages do say. Passages and questions are invented here, apart from the benches."""

from collections.abc import Callable
from pathlib import Path

import pytest

from kinject.rag.reader import Ct2Reader
from kinject.rag.reader_model import load_reader
from kinject.rag.service import RagService

pytestmark = pytest.mark.slow

FERRY = ("The Corran ferry crosses Loch Linnhe every twenty minutes from 06:30; the crossing "
         "takes about five minutes, and the photographs in its waiting room were taken by "
         "Elspeth Munro.")
HARBOUR = ("The harbour master of Port Alder is Duncan Reid. He keeps the tide tables and "
           "issues mooring permits at £12 a night.")
HALL = ("Ardgour village hall hosts a ceilidh on the first Friday of each month; tickets cost "
        "£8 at the door.")
KILN = "青岩村的老窑建于清朝末年，如今由陶艺师傅罗德明照看，每逢周六对游客开放。"


@pytest.fixture(scope="module")
def reader(reader_cache: Path) -> Ct2Reader:
    return Ct2Reader(load_reader("qwen2.5-0.5b", reader_cache, "cpu"))


@pytest.fixture()
def village(reader: Ct2Reader, hash_rag: Callable[..., RagService]) -> RagService:
    return hash_rag({"kb/ferry": FERRY, "kb/harbour": HARBOUR, "kb/hall": HALL,
                     "kb/kiln": KILN}, reader=reader, mode="read")


@pytest.mark.parametrize("question", [
    "Who won the 1987 Corran regatta?",
    "Who won the Corran regatta?",
    "青岩村的龙舟赛哪一年开始举办？",
])
def test_a_question_about_an_event_no_passage_mentions_abstains(village: RagService,
                                                                question: str) -> None:
    """The passages name the place ("Corran", "青岩村") but say nothing of the event asked
    about: no answer, and no citation, though the model would quote a name from the ferry."""
    answer = village.ask(question)
    assert answer.abstained and not answer.citations, answer


@pytest.mark.parametrize(("question", "expected", "source"), [
    ("How long does the Corran ferry crossing take?", "five minutes", "kb/ferry"),
    ("Who took the photographs in the Corran ferry waiting room?", "Elspeth Munro", "kb/ferry"),
    ("How much is a ticket for the Ardgour ceilidh?", "£8", "kb/hall"),
    ("谁在照看青岩村的老窑？", "罗德明", "kb/kiln"),
])
def test_what_the_same_passages_say_is_answered(village: RagService, question: str,
                                                expected: str, source: str) -> None:
    answer = village.ask(question)
    assert not answer.abstained and expected in answer.text, answer
    assert answer.citations[0].source_id == source


def test_a_part_of_a_name_is_weighed_and_the_whole_name_read_unweighed(reader: Ct2Reader
                                                                      ) -> None:
    """The one passage naming the thing asked about, all its words, is read in two model calls
    (name copy, reading); one naming only a part of it is weighed first (three)."""
    before = reader.calls
    whole = reader.read(["How long does the Corran ferry crossing take?"], [[FERRY, HALL]])[0]
    assert whole.answered and reader.calls - before == 2, whole
    before = reader.calls
    reader.read(["Who won the Corran regatta?"], [[FERRY, HALL]])
    assert reader.calls - before == 3


def test_questions_read_together_are_judged_as_when_read_alone(reader: Ct2Reader) -> None:
    """A batch of questions (concurrent asks) is judged on each reading's own first step: the
    regatta question, read beside shorter ones, still abstains and the others still answer."""
    questions = ["Who won the 1987 Corran regatta?", "How much is a ticket for the Ardgour "
                 "ceilidh?", "How long does the Corran ferry crossing take?"]
    alone = [reader.read([q], [[FERRY, HALL]])[0] for q in questions]
    together = reader.read(questions, [[FERRY, HALL]] * 3)
    assert [r.answered for r in together] == [r.answered for r in alone] == [False, True, True]
