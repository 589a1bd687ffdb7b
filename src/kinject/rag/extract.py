"""Extractive answering: which clause of the chosen sentences a question asks about, and which
span of it answers.

A sentence often holds several facts ("born in Osk in 1940 and studied law before joining
Verdant Mills"); the tiny reader mixes them up. So every sentence is cut into clauses, each
clause is scored against what the question asks (its words without the names, through the
embedder and stemmed word overlap), and candidate spans inherit their clause's score plus a
soft prior from the expected answer type (a year for "when", a name for "who").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kinject.rag.questions import QuestionInfo, without_terms
from kinject.rag.sentences import _ZH_SURNAMES, content_tokens, split_clauses
from kinject.rag.spans import candidate_spans
from kinject.rag.topics import is_relation_word

_DIGIT = re.compile(
    r"\d|[〇零一二三四五六七八九十百千万亿两]+[年岁个位名人座次元米]|"
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
    r"seventy|eighty|ninety|hundred|thousand|million|billion|dozen|dozens|hundreds|thousands)"
    r"\b", re.IGNORECASE)  # "forty-two comets" answers "how many" as well as "42 comets"
_CAPITAL = re.compile(r"^[A-Z0-9]")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Prepositions and verbs that put a place after them.
_EN_LOCATIVE = frozenset("in at from to near into of".split())
_ZH_LOCATIVE = ("在", "于", "到", "至", "往", "自", "居", "位于")


@dataclass(frozen=True)
class ClauseSpan:
    text: str
    sentence: int  # index of the sentence it comes from
    clause: str


def mask_names(text: str, terms: frozenset[str]) -> str:
    """The text without the names the question is about: what is said of them."""
    out = without_terms(text, terms)
    return out if len(out) > 1 else text


def clauses_of(sentences: Sequence[str]) -> list[tuple[int, str]]:
    return [(i, c) for i, s in enumerate(sentences) for c in split_clauses(s)]


def clause_spans(sentences: Sequence[str], info: QuestionInfo) -> list[ClauseSpan]:
    """Candidate answers: the content runs of every clause, minus the question's own words."""
    out: list[ClauseSpan] = []
    seen: set[str] = set()
    for si, clause in clauses_of(sentences):
        for span in candidate_spans([clause], info.text, protect=info.terms):
            key = span.text.lower()
            if key in seen:
                continue
            seen.add(key)
            out.append(ClauseSpan(span.text, si, clause))
    return out


# A preposition that ends a question ("Where does the ferry sail from?") names the word that
# stands before the answer in the passage ("sails from Vask").
_STRANDED = re.compile(r"\b(from|to|in|at|for|with|by|on|of|into|under|after)\s*\W*$",
                       re.IGNORECASE)


def anchored(span: str, clause: str, info: QuestionInfo, reach: int = 2) -> bool:
    """Whether the words right before the span in its clause are words the question asks
    with ("studied ~" for "what did she study", "出生在~" for "出生地", "sails from ~")."""
    at = clause.find(span)
    if at <= 0:
        return False
    before = clause[:at]
    if info.lang == "zh":
        near = before[-(reach + 2):]
        return bool(content_tokens(near) & {t for t in content_tokens(info.asked) if len(t) == 2})
    words = before.split()[-reach:]
    want = content_tokens(info.asked)
    stranded = _STRANDED.search(info.text)
    if stranded:
        want = want | {stranded.group(1).lower()}
    return any(content_tokens(w) & want or w.lower() in want for w in words)


_QUOTES = (("“", "”"), ("「", "」"), ("『", "』"), ('"', '"'))


def type_prior(span: str, clause: str, info: QuestionInfo) -> float:
    """How well a span fits the kind of answer the question expects: -3..1 (0: no opinion).
    A span that is only a relation word ("家乡" of "家乡是大理") loses 1: the value follows.
    So does a span on the same side of a copula as the names the question gives: "The ferry
    from Saltreach to Vask is the Morrow Wren" names the ferry to say which one it is."""
    fit = _kind_fit(span, clause, info)
    if is_relation_word(span, info.lang) or beside_the_names(span, clause, info):
        return fit - 1.0
    return fit


_EN_COPULA = re.compile(r"\b(?:is|was|are|were)\b", re.IGNORECASE)
# 是 that is a copula, not part of 还是/于是/但是/就是 (or, so, but, exactly).
_ZH_COPULA = re.compile(r"(?<![还于但就可总只也正要若凡硬倒])是")


def beside_the_names(span: str, clause: str, info: QuestionInfo) -> bool:
    """Whether ``span`` sits on the side of the clause's one copula ("is", "是") that holds
    what the question gives (its names, or its words), while the other side holds none of
    it: that side says which thing is meant, the other side what it is."""
    parts = (_ZH_COPULA if info.lang == "zh" else _EN_COPULA).split(clause)
    if len(parts) != 2:
        return False
    given = [_gives(part, info) for part in parts]
    if given[0] == given[1]:
        return False
    side, other = (parts[0], parts[1]) if given[0] else (parts[1], parts[0])
    return span in side and span not in other


def _gives(text: str, info: QuestionInfo) -> bool:
    low = text.lower()
    if info.lang == "zh":
        if any(t in low for t in info.terms):
            return True
        asked = {t for t in content_tokens(info.asked) if len(t) >= 2}
        return bool(asked & content_tokens(text))
    if any(re.search(rf"\b{re.escape(t)}\b", low) for t in info.terms):
        return True
    return bool(content_tokens(info.asked) & content_tokens(text))


def _kind_fit(span: str, clause: str, info: QuestionInfo) -> float:
    numeric = bool(_DIGIT.search(span))
    kind = info.answer_type
    if kind == "number":
        return 1.0 if numeric else -1.0
    if numeric:  # a year is never the town or the person asked for
        return -2.0 if kind in ("place", "person") else -1.0
    if any(f"{a}{span}{b}" in clause for a, b in _QUOTES):
        return 0.8  # a name the passage gives in quotes ("a tea called “Mist Brow”")
    if info.lang == "en":
        proper = all(_CAPITAL.match(w) for w in span.split() if w[:1].isalpha())
        if kind == "person":
            return 1.0 if proper and len(span.split()) >= 2 else (0.3 if proper else -0.5)
        if kind == "place":
            words = clause[: clause.find(span)].split() if span in clause else []
            locative = bool(words) and words[-1].lower() in _EN_LOCATIVE
            return (0.7 if proper else -0.5) + (0.3 if locative else 0.0)
        return 0.0
    if kind == "person":
        return 1.0 if span[:1] in _ZH_SURNAMES and 2 <= len(span) <= 4 else -0.3
    if kind == "place":
        at = clause.find(span)
        before = clause[:at] if at > 0 else ""
        native = clause[at + len(span): at + len(span) + 1] == "人" or (  # 扬州人: of 扬州
            span.endswith("人") and len(span) >= 3)
        if before.endswith(_ZH_LOCATIVE) or native:
            return 0.6
        return 0.0
    return 0.0
