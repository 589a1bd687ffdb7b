"""What a question asks: the names it is about, what it asks of them, the kind of answer it
expects, and whether a quote can answer it at all.

Factoid questions ("Where was Ada Quill born?", "青岚科技成立于哪一年？") are answered best by a
span of the passage (the tiny reader confuses fields when it writes); questions that ask for an
explanation, a description or a yes/no need the model to write. The expected answer type is a
soft prior on candidate spans (a year for "when", a name for "who"), never a filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kinject.rag.sentences import key_terms
from kinject.rag.topics import question_topics

AnswerType = Literal["number", "place", "person", "thing"]

_CJK = re.compile(r"[\u3400-\u9fff]")

# Checked in order: the first that matches names the type ("where ... year" is a year).
_EN_TYPES: tuple[tuple[AnswerType, re.Pattern[str]], ...] = (
    ("number", re.compile(
        r"\b(?:when|(?:what|which) (?:year|date|decade|century|age|number|percentage)|"
        r"how (?:many|much|old|long|far|often|tall|high|big|large)|year of)\b", re.IGNORECASE)),
    ("person", re.compile(r"\b(?:who|whom|whose|which (?:person|man|woman|people))\b",
                          re.IGNORECASE)),
    ("place", re.compile(
        r"\b(?:where|(?:what|which|in what|in which) (?:town|city|village|country|place|port|"
        r"region|state|province|island|street|county)|birthplace|hometown)\b", re.IGNORECASE)),
)
_ZH_TYPES: tuple[tuple[AnswerType, re.Pattern[str]], ...] = (
    ("number", re.compile(r"哪一?年|年份|多少|几[年岁个位名人次]|何时|什么时候|哪天|日期|多大")),
    ("person", re.compile(r"谁|哪位|什么人")),
    ("place", re.compile(r"哪里|哪儿|何处|何地|哪[座个]?(?:城市|地方|国家|省|县|镇|村)|"
                         r"什么地方|在哪|出生地|籍贯|家乡")),
)

# Questions a span cannot answer: explanations, descriptions, comparisons, yes/no.
_EN_WRITE = re.compile(
    r"^\s*(?:why|how (?:does|do|did|is|are|was|were|can|could|should|would|to)|explain|describe|"
    r"summari[sz]e|compare|discuss|tell me about|what (?:is|are) the (?:difference|reason|"
    r"relationship)|(?:is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b)",
    re.IGNORECASE)
_ZH_WRITE = re.compile(r"为什么|为何|如何|怎么样|怎样|解释|介绍|总结|概括|比较|区别|原因|"
                       r"是否|是不是|有没有|吗[？?]?\s*$")


@dataclass(frozen=True)
class QuestionInfo:
    text: str
    lang: Literal["en", "zh"]
    terms: frozenset[str]  # names a passage must mention (key_terms)
    asked: str  # the question without those names: what it asks about them
    answer_type: AnswerType
    needs_writing: bool  # an explanation or yes/no: a quote will not do
    topics: frozenset[str] = frozenset()  # the relations it asks about (rag.topics)


def analyse(question: str) -> QuestionInfo:
    lang: Literal["en", "zh"] = "zh" if _CJK.search(question) else "en"
    terms = frozenset(key_terms(question))
    types = _ZH_TYPES if lang == "zh" else _EN_TYPES
    answer_type: AnswerType = next((t for t, rx in types if rx.search(question)), "thing")
    writes = (_ZH_WRITE if lang == "zh" else _EN_WRITE).search(question) is not None
    return QuestionInfo(question, lang, terms, asked_part(question, terms), answer_type, writes,
                        question_topics(question, lang))


def asked_part(question: str, terms: frozenset[str] | set[str] | None = None) -> str:
    """The question without the names it mentions: what it asks about them."""
    out = without_terms(question, key_terms(question) if terms is None else terms)
    return " ".join(re.sub(r"['’]s\b", " ", out).split())


def without_terms(text: str, terms: frozenset[str] | set[str]) -> str:
    """``text`` with every term (longest first, any case) removed, spaces collapsed."""
    out = text
    for term in sorted(terms, key=len, reverse=True):
        out = re.sub(re.escape(term), " ", out, flags=re.IGNORECASE)
    return " ".join(out.split())
