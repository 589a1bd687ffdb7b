"""Split passages into sentences and pick the ones that answer a question.

The tiny default reader confuses people and fields when given whole passages but does well
on one or two sentences (ENVIRONMENT.md), so we retrieve passages and then choose sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kinject.index.embedders import Embedder
from kinject.types import Hit

# English sentence ends (followed by space) and Chinese ones (no space needed); line breaks.
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[\u3400-\u9fff])|(?<=[。！？；])|\n+")
_WORD = re.compile(r"[A-Za-z0-9]+|[\u3400-\u9fff]")


def split_sentences(text: str) -> list[str]:
    parts = (p.strip() for p in _SPLIT.split(text))
    return [p for p in parts if len(p) > 1]


def tokens(text: str) -> set[str]:
    """Lower-cased words, and single characters for Chinese."""
    return {t.lower() for t in _WORD.findall(text)}


@dataclass(frozen=True)
class Candidate:
    sentence: str
    hit: Hit
    score: float


# Structured records (a table row, a JSON object) are read whole: split into "field: value"
# sentences they would lose the entity each field belongs to.
STRUCTURED_KINDS = frozenset({"csv", "tsv", "json", "jsonl", "xml", "sql"})


def reading_units(hit: Hit) -> list[str]:
    """The pieces of a passage the reader may be shown: sentences, or the whole record."""
    if hit.meta.get("kind") in STRUCTURED_KINDS:
        return [hit.text.strip()]
    return split_sentences(hit.text)


def select_sentences(question: str, hits: list[Hit], embedder: Embedder,
                     max_sentences: int = 2, margin: float = 0.1) -> list[Candidate]:
    """Rank every reading unit of the hits by similarity to the question, weighted by its
    passage.

    The score mixes the unit's cosine with the question, its passage's retrieval score and
    word overlap, so a sentence about the right entity in the right passage wins.
    """
    pairs = [(s, h) for h in hits for s in reading_units(h)]
    if not pairs:
        return []
    vecs = embedder.encode([question] + [s for s, _ in pairs])
    sims = vecs[1:] @ vecs[0]
    q_tokens = tokens(question)
    scored = []
    for (sentence, hit), sim in zip(pairs, sims, strict=True):
        overlap = len(q_tokens & tokens(sentence)) / max(1, len(q_tokens))
        scored.append(Candidate(sentence, hit, float(sim) + 0.5 * hit.score + 0.3 * overlap))
    scored.sort(key=lambda c: c.score, reverse=True)
    seen: set[str] = set()
    chosen: list[Candidate] = []
    for c in scored:
        # A runner-up far behind the best unit only gives the reader an entity to confuse.
        if chosen and c.score < chosen[0].score - margin:
            break
        if c.sentence not in seen:
            seen.add(c.sentence)
            chosen.append(c)
        if len(chosen) == max_sentences:
            break
    return chosen


def grounding(answer: str, passage: str, question: str = "") -> float:
    """Share of the answer's new words (those the question did not contain) found in the
    passage, 0..1. An answer that only restates the question scores 0."""
    new = tokens(answer) - tokens(question)
    if not new:
        return 0.0
    return len(new & tokens(passage)) / len(new)


def best_grounding(answer: str, passages: list[str], question: str = "") -> tuple[int, float]:
    scores = (np.array([grounding(answer, p, question) for p in passages]) if passages
              else np.zeros(0))
    if scores.size == 0:
        return -1, 0.0
    i = int(scores.argmax())
    return i, float(scores[i])


_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how is are was were do does did in on at of the "
    "a an i you tell name list give".split())
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9'’-]*[A-Za-z0-9]|\b\d{3,}\b")


# The most common Chinese surnames: a name in a question is a surname and one or two chars.
_ZH_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
    "魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
    "万钱严覃武戴莫孔向汤欧")
# Characters that end a name: particles and verbs a question puts right after it.
_ZH_AFTER_NAME = frozenset("的是在于和与读最后出生哪什么为被把从向到对将就都也又并而或其这那"
                           "了吗呢有去住来工学曾主现从今当")
_ZH_BEFORE_NAME = frozenset("的是和与把被给对向问请")


def key_terms(question: str) -> set[str]:
    """The names in a question that a passage must mention to be about the same thing.

    English: capitalised words and long numbers (not the question word that opens it).
    Chinese: a common surname opening a run (or after a particle) with the one or two
    characters of its given name.
    """
    terms = {re.sub(r"['’]s$", "", m.group(0).lower()) for m in _CAPITALISED.finditer(question)}
    terms -= _QUESTION_WORDS
    for i, ch in enumerate(question):
        if ch not in _ZH_SURNAMES:
            continue
        before = question[i - 1] if i else ""
        if before and _CJK_CHAR.match(before) and before not in _ZH_BEFORE_NAME:
            continue
        given = question[i + 1:i + 3]
        if not given or not _CJK_CHAR.match(given[0]) or given[0] in _ZH_AFTER_NAME:
            continue
        if len(given) == 2 and (given[1] in _ZH_AFTER_NAME or not _CJK_CHAR.match(given[1])):
            given = given[:1]
        terms.add(ch + given)
    return terms


_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")


def covers(text: str, terms: set[str]) -> bool:
    low = text.lower()
    return all(t in low for t in terms)
