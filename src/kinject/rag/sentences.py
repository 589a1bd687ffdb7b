"""Split passages into sentences and pick the ones that answer a question.

The tiny default reader confuses people and fields when given whole passages but does well
on one or two sentences (ENVIRONMENT.md), so we retrieve passages and then choose sentences.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kinject.index.embedders import Embedder
from kinject.types import Hit

# English sentence ends (followed by space) and Chinese ones (no space needed); line breaks.
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[\u3400-\u9fff])|(?<=[。！？；])|\n+")
_WORD = re.compile(r"[A-Za-z0-9]+|[\u3400-\u9fff]")
# A link: where a planted instruction leads ("reply with https://..."). Answers never quote one;
# a citation already points at the passage.
LINK = re.compile(r"\b(?:https?|ftp)://|\bwww\.[\w-]+\.", re.IGNORECASE)


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
_ZH_BEFORE_NAME = frozenset("的是和与把被给对向问请中")  # 中: "记录中周小明对应的…"


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
    # The topic a Chinese question opens with ("青岚科技的创始人是谁", "青岚科技是谁创立的"):
    # a name that is not a person's (a company, a place, a work).
    topic = _ZH_TOPIC.match(question.strip())
    if topic and not _ZH_QUESTION_WORD.search(topic.group(1)):
        if not any(t in topic.group(1) for t in terms):
            terms.add(topic.group(1))
    return terms


_ZH_TOPIC = re.compile(r"([\u3400-\u9fff]{2,8}?)(?:的|是|有|在哪|位于|坐落|成立|生产)")
_ZH_QUESTION_WORD = re.compile(r"什么|哪|谁|怎|为何|为什么|几|多少|如何|是否")


_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")


def covers(text: str, terms: set[str]) -> bool:
    low = text.lower()
    return all(t in low for t in terms)


# Clause boundaries inside a sentence: punctuation, and the conjunctions that open a new clause
# before a lower-case word ("... in 1940 and studied ...", "... history before joining ...").
_CLAUSE = re.compile(
    # a record's "field: value" lines, and "Label: value." pairs of a table row
    r"\s*\n+\s*|(?<=\.)\s+(?=[^\s:.][^:.\n]{0,40}:\s)|"
    r"\s*[;；，,]\s*|(?<=[。！？])|"
    r"\s+(?:and|but|while|whereas|before|after|where|when|which|then|since|until)\s+(?=[a-z])")


def split_clauses(sentence: str) -> list[str]:
    """A sentence cut into clauses, each holding (about) one fact; the sentence itself when it
    has one clause. Clauses are what a question is matched against: in "born in Osk in 1940
    and studied law" the clause "studied law" answers "what did she study"."""
    parts = [p.strip(" .!?。！？") for p in _CLAUSE.split(sentence)]
    parts = [p for p in parts if len(_WORD.findall(p)) >= 1 and len(p) > 1]
    return parts or [sentence]


_EN_FUNCTION = frozenset(
    "a an the and or but if of in on at to for from by with into onto over under about after "
    "before during since until while as than then so that this these those there here is are "
    "was were be been being am has have had do does did will would shall should can could may "
    "might must not no it its he she they them his her their him we our you your i me my who "
    "whom whose which what when where why how all any each some such only also now later "
    "eventually".split())
# Chinese characters that carry grammar, not meaning (question words included).
_ZH_FUNCTION = frozenset("的了在于和与及是为被把从向到对将就都也又并而或其这那他她它们我你之以"
                         "着过吗呢吧啊有个哪里儿什么谁几多少何呀些位座所曾")


@functools.lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer  # PyStemmer, which bm25s brings

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - words are matched unstemmed
        return None


def _stem(words: list[str]) -> list[str]:
    stemmer = _stemmer()
    return list(stemmer.stemWords(words)) if stemmer is not None and words else words


def content_tokens(text: str) -> set[str]:
    """The words that carry meaning: English stems without function words, Chinese content
    characters and the bigrams of them. For matching what a question asks with a clause."""
    words = [t.lower() for t in _WORD.findall(text)]
    en = [w for w in words if not _CJK_CHAR.match(w) and w not in _EN_FUNCTION]
    out = set(_stem(en))
    zh = [c for c in _CJK_CHAR.findall(text)]
    out |= {c for c in zh if c not in _ZH_FUNCTION}
    out |= {a + b for a, b in zip(zh, zh[1:], strict=False)
            if a not in _ZH_FUNCTION and b not in _ZH_FUNCTION}
    return out


def overlap(asked: str, text: str) -> float:
    """Share of the asked content tokens that the text has (0..1)."""
    want = content_tokens(asked)
    return len(want & content_tokens(text)) / len(want) if want else 0.0
