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
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|(?<=[。！？；])|\n+")
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


def select_sentences(question: str, hits: list[Hit], embedder: Embedder,
                     max_sentences: int = 2) -> list[Candidate]:
    """Rank every sentence of the hits by similarity to the question, weighted by its passage.

    The score mixes the sentence's cosine with the question, its passage's retrieval score and
    word overlap, so a sentence about the right entity in the right passage wins.
    """
    pairs = [(s, h) for h in hits for s in split_sentences(h.text)]
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
    chosen = []
    for c in scored:
        if c.sentence not in seen:
            seen.add(c.sentence)
            chosen.append(c)
        if len(chosen) == max_sentences:
            break
    return chosen


def grounding(answer: str, passage: str) -> float:
    """Share of the answer's words that occur in the passage (0..1)."""
    a = tokens(answer)
    if not a:
        return 0.0
    return len(a & tokens(passage)) / len(a)


def best_grounding(answer: str, passages: list[str]) -> tuple[int, float]:
    scores = np.array([grounding(answer, p) for p in passages]) if passages else np.zeros(0)
    if scores.size == 0:
        return -1, 0.0
    i = int(scores.argmax())
    return i, float(scores[i])
