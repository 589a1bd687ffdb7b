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
