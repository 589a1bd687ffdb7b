"""Relation topics: a question asked in other words than the passage ("come into the world"
for "born", "工作单位" for "加入") still reaches the clause that states the fact (hash
embedder and a tiny random LM: the choice must come from the topic cues, not a model)."""

from typing import Any

import pytest

from kinject.rag.extract import clause_spans
from kinject.rag.questions import analyse
from kinject.rag.service import RagService
from kinject.rag.topics import (
    TOPIC_NAMES,
    clause_topics,
    is_relation_word,
    question_topics,
    topic_match,
)

BIO_EN = ("Wendeline Marsh (1948) is a native of Keswold. After a degree in tidal engineering, "
          "Wendeline took a job at Harrow & Finch; in 1979 the family relocated to Brightwater.")
BIO_ZH = "嘉兴人冯子墨，1952年出生，专业是古籍修复，曾任职于松风书局，1983年移居惠州。"


@pytest.mark.parametrize(("question", "lang", "topic"), [
    ("In which town did Ada come into the world?", "en", "birth"),
    ("Where is Ada originally from?", "en", "birth"),
    ("Which discipline was Ada educated in?", "en", "study"),
    ("Where did Ada have a job?", "en", "work"),
    ("Where did Ada settle down eventually?", "en", "home"),
    ("When was the Gull Press established?", "en", "founding"),
    ("Who makes the Tern kettle?", "en", "making"),
    ("How much does the Tern kettle cost?", "en", "price"),
    ("冯子墨的老家在哪里？", "zh", "birth"),
    ("冯子墨学的是什么？", "zh", "study"),
    ("冯子墨的工作单位是哪里？", "zh", "work"),
    ("冯子墨最后定居在哪里？", "zh", "home"),
    ("松风书局是哪一年创办的？", "zh", "founding"),
    ("这款水壶的售价是多少？", "zh", "price"),
])
def test_questions_name_the_relation_they_ask_about(question: str, lang: str,
                                                    topic: str) -> None:
    assert topic in question_topics(question, lang)
    assert analyse(question).topics == question_topics(question, lang)


def test_clauses_name_the_relation_they_state() -> None:
    assert clause_topics("is a native of Keswold", "en") == {"birth"}
    assert clause_topics("Wendeline Marsh (1948) studied law", "en") == {"birth", "study"}
    assert clause_topics("took a job at Harrow & Finch", "en") == {"work"}
    assert clause_topics("in 1979 the family relocated to Brightwater", "en") == {"home"}
    assert clause_topics("嘉兴人冯子墨", "zh") == {"birth"}
    assert clause_topics("专业是古籍修复", "zh") == {"study"}
    assert clause_topics("1983年移居惠州", "zh") == {"home"}
    assert clause_topics("the weather was mild", "en") == frozenset()
    assert set(TOPIC_NAMES) >= {"birth", "study", "work", "home"}


def test_topics_agree_disagree_or_have_no_say() -> None:
    assert topic_match(frozenset({"birth"}), frozenset({"birth", "study"})) == 1.0
    assert topic_match(frozenset({"birth"}), frozenset({"work"})) == -1.0
    assert topic_match(frozenset(), frozenset({"work"})) == 0.0
    assert topic_match(frozenset({"birth"}), frozenset()) == 0.0


def test_relation_words_are_not_answers() -> None:
    assert is_relation_word("家乡", "zh") and is_relation_word("定居", "zh")
    assert not is_relation_word("松风书局", "zh")
    assert not is_relation_word("出版社", "zh")  # a cue inside a name is part of the name
    # the relation word splits a run: the value beside it is the candidate
    spans = [s.text for s in clause_spans(["1983年定居惠州"], analyse("冯子墨最后住在哪里？"))]
    assert "惠州" in spans and "1983年定居惠州" not in spans


@pytest.fixture()
def rag(hash_rag: Any) -> RagService:
    return hash_rag({"kb/marsh": BIO_EN, "kb/feng": BIO_ZH})


@pytest.mark.parametrize(("question", "want", "source"), [
    ("In which town did Wendeline Marsh come into the world?", "Keswold", "kb/marsh"),
    ("What year was Wendeline Marsh born in?", "1948", "kb/marsh"),
    ("Which discipline was Wendeline Marsh educated in?", "tidal engineering", "kb/marsh"),
    ("Where did Wendeline Marsh have a job?", "Harrow & Finch", "kb/marsh"),
    ("Where did Wendeline Marsh settle down eventually?", "Brightwater", "kb/marsh"),
    ("冯子墨是在哪座城市出生的？", "嘉兴", "kb/feng"),
    ("冯子墨读的是什么专业？", "古籍修复", "kb/feng"),
    ("冯子墨的工作单位是哪里？", "松风书局", "kb/feng"),
    ("冯子墨后来住在哪个城市？", "惠州", "kb/feng"),
])
def test_questions_in_other_words_get_the_value_of_the_clause_they_ask_about(
        rag: RagService, question: str, want: str, source: str) -> None:
    answer = rag.ask(question, route="rag")
    assert not answer.abstained, question
    assert want in answer.text, (question, answer.text)
    assert [c.source_id for c in answer.citations] == [source]


def test_organisations_and_places_have_their_topics_and_names() -> None:
    from kinject.rag.sentences import key_terms

    assert clause_topics("The firm has its head office in Lowmere", "en") == {"location"}
    assert "location" in question_topics("Where is Brackenfold Ltd based?", "en")
    assert clause_topics("厂址在景德镇", "zh") == {"location"}
    assert "founding" in question_topics("白水镇的石桥是什么时候建的？", "zh")
    # a Chinese question that opens with what it is about names it, whatever verb follows
    assert key_terms("青山陶瓷厂在哪座城市？") == {"青山陶瓷厂"}
    assert key_terms("云岚科技成立于哪一年？") == {"云岚科技"}


def test_a_name_after_a_phrase_that_opens_the_question_is_still_a_name() -> None:
    from kinject.rag.sentences import key_terms

    # the corpus builder's own question form: "in the record, 周小明's birth year is which?"
    assert key_terms("记录中周小明对应的出生年份是哪个？") == {"周小明"}


def test_an_institution_keeps_its_whole_name() -> None:
    spans = [s.text for s in clause_spans(["大学：南湖学院"], analyse("周小明的大学是哪个？"))]
    assert "南湖学院" in spans


def test_numbers_in_words_answer_how_many(hash_rag: Any) -> None:
    rag = hash_rag({"web/saltmarsh": "The Saltmarsh observatory on Kellan Point counts "
                                     "forty-two comets each winter."})
    answer = rag.ask("How many comets does the Saltmarsh observatory count?", route="rag")
    assert "forty-two" in answer.text
