"""What a follow-up asks about: the name the reader copies from the question, else from the
conversation's earlier user turns.

"When was it founded?" after "Tell me about Orrin Marine." names nothing the reader can look
for in a passage; the turn before it does. The reader's own name copy (``Ct2Reader.subjects``,
a model judgement, no list of pronouns or phrasings) is asked of the question first. Where it
finds no name there, the earlier turns are asked, most recent first, and the first name a
retrieved passage holds is taken. A follow-up that names its own subject is read about that
one, and one naming a thing no passage holds is abstained on, as any question about an
unknown thing.

Not done: taking an earlier turn's name where the question's copied name is held by no
passage. The model copies "它有" of "它有多少吨？" as a name (Chinese words are not marked as
names are in English), so Chinese pronoun follow-ups would gain (bench/chat_followup.py dev,
quick: 0.43 -> 1.00), but a question about an unknown thing after a turn about a known one
was then answered about the known one: abstentions 1.00 -> 0.00, en and zh.
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
    more for the earlier turns of those whose question names nothing."""
    names = reader.subjects(questions)
    sources = list(questions)
    if not contexts:
        return names, sources

    def holds(qi: int, name: str, source: str) -> bool:
        return any(_names(name, u, source) for t in passages[qi] for u in reader.units(t))

    unsure = [qi for qi, name in enumerate(names) if contexts[qi] and name is None]
    asks = [(qi, turn) for qi in unsure for turn in reversed(contexts[qi])]
    if not asks:
        return names, sources
    settled: set[int] = set()
    for (qi, turn), name in zip(asks, reader.subjects([t for _, t in asks]), strict=True):
        if name is not None and qi not in settled and holds(qi, name, turn):
            names[qi], sources[qi] = name, turn  # the most recent turn naming a held thing
            settled.add(qi)
    return names, sources
