"""What a follow-up asks about: the name the reader copies from the question, else from the
conversation's earlier user turns.

"When was it founded?" after "Tell me about Orrin Marine." names nothing the reader can look
for in a passage; the turn before it does. The reader's own name copy (``Ct2Reader.subjects``,
a model judgement, no list of pronouns or phrasings) is asked of the question first, and only
where it finds no name there, of the earlier turns, most recent first: a follow-up that names
its own subject ("And when was Vessel Lane built?") is read about that one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Subjects = Callable[[Sequence[str]], list[str | None]]


def subjects_in_conversation(subjects: Subjects, questions: Sequence[str],
                             contexts: Sequence[Sequence[str]] | None
                             ) -> tuple[list[str | None], list[str]]:
    """Per question, the name it asks about and the text that name was copied from (the
    question itself, or the earlier turn that named it; the reader checks a passage's words
    against the way that text writes the name). One model call for the questions, and one
    more for the earlier turns of those that name nothing."""
    names = subjects(questions)
    sources = list(questions)
    if not contexts:
        return names, sources
    asks: list[tuple[int, str]] = [
        (qi, turn) for qi, (name, turns) in enumerate(zip(names, contexts, strict=True))
        if name is None for turn in reversed(turns)]
    if not asks:
        return names, sources
    found = subjects([turn for _, turn in asks])
    for (qi, turn), name in zip(asks, found, strict=True):
        if name is not None and names[qi] is None:  # the most recent turn naming one
            names[qi], sources[qi] = name, turn
    return names, sources
