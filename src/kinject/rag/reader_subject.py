"""The name a question asks about, as the reader's model copies it from the question: which
questions can have one worth a model call, when a reply being written has stopped copying
(the rest cannot change the name, so decoding stops there), and what of a reply is kept."""

from __future__ import annotations

import unicodedata

from kinject.rag.reader_prompts import NONE_MARK
from kinject.rag.reader_text import _CJK_RUN, _clean, _copied_prefix, _fold, _marked


def could_name(question: str) -> bool:
    """Whether a copy of ``question``'s words could be kept as a name (``kept_name``): only
    when the question has a word marked as a name's (capitalised or holding a digit, but its
    first word) or Chinese. A question with neither needs no model call: whatever is copied
    from it would be dropped."""
    return bool(_marked(question, question)
                or _CJK_RUN.search(unicodedata.normalize("NFKC", question)))


def past_copy(reply: str, question: str) -> bool:
    """Whether a reply being written already says what it will be kept as: it said NONE, ended
    its first line, or stopped being a copy of the question's words. The kept name is the
    reply's longest start that the question holds, so nothing written after can change it."""
    text = _clean(reply)
    return ("\n" in reply.strip() or text.upper().startswith(NONE_MARK)
            or _fold(text) not in _fold(question))


def kept_name(reply: str, question: str) -> str | None:
    """The name ``reply`` copied from ``question``, or None: it said NONE, copied no words of
    the question, copied all of it, or copied words that are no name (below)."""
    name = _clean(reply)
    if name.upper().startswith(NONE_MARK):
        return None
    # A small model sometimes goes on past the name and answers ("雪峰冰川每年后退10米"):
    # what it copied is the start of its reply that the question holds.
    name = _copied_prefix(name, question)
    # The whole question copied back names nothing in it.
    keep = bool(name) and len(_fold(name)) < len(_fold(question))
    # Only a name is checked for: words marked as a name's are (capitalised or holding a digit
    # as the question writes them) or Chinese. A common noun phrase ("the harbour ferry")
    # names no one entity, and a passage may spell it otherwise ("harbor"): such a question
    # is weighed by the stricter PMI bar instead.
    return name if keep and (_marked(name, question) or _CJK_RUN.search(name)) else None
