"""What a follow-up asks about: the name the reader copies from the question, else from the
conversation's earlier user turns.

"When was it founded?" after "Tell me about Orrin Marine." names nothing the reader can look
for in a passage; the turn before it does. The reader's own name copy (``Ct2Reader.subjects``,
a model judgement, no list of pronouns or phrasings) is asked of the question first. Where it
finds no name there, or one that no retrieved passage holds (the model copies "它" of
"它有多少吨？" as a name: Chinese words are not marked as names are in English), the earlier
turns are asked, most recent first, and the first name that a retrieved passage holds is
taken. A follow-up that names its own subject, found in the passages, is read about that one;
one naming a thing no passage holds keeps its name when no earlier turn's name is found
either, and the reader abstains as it does on any question about an unknown thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kinject.rag.reader_text import _names


class NameCopier(Protocol):
    """The reader's name copy and its reading units (Ct2Reader)."""

    def subjects(self, questions: Sequence[str]) -> list[str | None]: ...

    def units(self, passage: str) -> list[str]: ...


def conversation_subjects(reader: NameCopier, questions: Sequence[str],
                          passages: Sequence[Sequence[str]],
                          contexts: Sequence[Sequence[str]] | None
                          ) -> tuple[list[str | None], list[str]]:
    """Per question, the name it asks about and the text that name was copied from (the
    question itself, or the earlier turn that named it; the reader checks a passage's words
    against the way that text writes the name). One model call for the questions, and one
    more for the earlier turns of those whose question names nothing the passages hold."""
    names = reader.subjects(questions)
    sources = list(questions)
    if not contexts:
        return names, sources

    def holds(qi: int, name: str, source: str) -> bool:
        return any(_names(name, u, source) for t in passages[qi] for u in reader.units(t))

    unsure = [qi for qi, name in enumerate(names)
              if contexts[qi] and (name is None or not holds(qi, name, questions[qi]))]
    asks = [(qi, turn) for qi in unsure for turn in reversed(contexts[qi])]
    if not asks:
        return names, sources
    settled: set[int] = set()
    for (qi, turn), name in zip(asks, reader.subjects([t for _, t in asks]), strict=True):
        if name is not None and qi not in settled and holds(qi, name, turn):
            names[qi], sources[qi] = name, turn  # the most recent turn naming a held thing
            settled.add(qi)
    return names, sources
