"""The reader's text work: cleaning a model's reply, the name a question asks about (copying
it from the question, whether a passage names it), casing a shouted reply, flattening a passage."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from kinject.rag.records import is_record
from kinject.rag.sentences import tokens

_CJK = re.compile(r"[\u3400-\u9fff]")
_MARKERS = re.compile(r"\[\d+\]")


def _clean(text: str) -> str:
    text = text.strip().split("\n", 1)[0].replace("\ufffd", "")
    text = _MARKERS.sub("", text).strip()
    return text.strip(" \"'“”「」")


_SHOUTED = re.compile(r"([^\W\d_]{2,})[.!]?")


def _sentence_case(text: str, unit: str) -> str:
    """A one-word reply in capitals that its passage never writes so ("YES", "NO") is the
    model shouting, not a code or an acronym of the passage: written as a word ("Yes")."""
    m = _SHOUTED.fullmatch(text)
    if m is None or not m.group(1).isupper() or m.group(1) in unit:
        return text
    return m.group(1).capitalize()


def _copied_prefix(reply: str, question: str) -> str:
    """The longest start of ``reply`` that ``question`` holds (case, spacing and punctuation
    aside), without trailing spaces or punctuation; "" when not even two letters are."""
    asked = _fold(question)
    for end in range(len(reply), 0, -1):
        head = reply[:end]
        if not reply[end - 1].isalnum() or (
                end < len(reply) and _in_word(reply[end - 1]) and _in_word(reply[end])):
            continue  # not a whole word ("open" of "opened"); Chinese cuts anywhere
        folded = _fold(head)
        if len(folded) < 2:
            return ""
        if folded in asked:
            return head.strip()
    return ""


def _in_word(ch: str) -> bool:
    return ch.isalnum() and not _CJK.match(ch)


def _fold(text: str) -> str:
    """Lower case, NFKC, letters and digits only."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


_MARKED = re.compile(r"[^\W_][\w.'’-]*[^\W_]|[^\W_]")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")


def _marked(name: str, question: str = "") -> list[str]:
    """The words of ``name`` shaped as a name's: capitalised or holding a digit as the
    question writes them, but the question's first word (capitalised anyway)."""
    asked = _MARKED.findall(question)
    first = asked[0] if asked else ""
    return [w for w in _MARKED.findall(name) if w.isascii() and w != first and len(w) > 1
            and (any(c.isupper() for c in w) or any(c.isdigit() for c in w))
            and (not asked or w in asked)]


def _names(name: str, text: str, question: str = "") -> bool:
    """Whether ``text`` names ``name``: the whole name (case, spacing and punctuation aside),
    or, where the model copied more of the question than the name, the name's marked words
    (capitalised or holding a digit as the question writes them, but its first word; a
    possessive counts as its word) and the head of its first
    Chinese run (its first three characters, or the whole run when shorter; a character the
    question puts before it may be skipped). Only the shape of the words counts."""
    hay = _fold(text)
    if _fold(name) in hay:
        return True
    marked = _marked(name, question)
    words = {w.lower() for w in _MARKED.findall(text)}
    words |= {re.split(r"['’]", w)[0] for w in words}  # "Orrin Marine's" names "Marine"

    def present(w: str) -> bool:  # "Wielgus's" is named by "Wielgus"
        w = w.lower()
        stem = re.split(r"['’]", w)[0]
        return w in words or (len(stem) > 1 and stem in words)

    if not all(present(w) for w in marked):
        return False
    run = _CJK_RUN.search(name)
    if run is None:
        return bool(marked)
    head = run.group()
    need = min(3, len(head))
    return any(_fold(head[i:i + need]) in hay for i in range(min(2, len(head) - need + 1)))


def _flat(passage: str) -> str:
    """Spaces inside lines folded; line breaks kept (a record's fields stay one a line)."""
    lines = (" ".join(line.split()) for line in passage.splitlines())
    return "\n".join(line for line in lines if line)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(_flat(text).replace("\n", " ")) if s.strip()]


_ENDED = (".", "!", "?", "。", "！", "？", "；")


def _paragraph_sentences(text: str) -> list[str]:
    """The sentences of prose whose lines may wrap: paragraphs (between blank lines) are
    split apart, so a heading or a title on a line of its own ("## Expenses", a document's first
    line) never runs into the sentence after it, and is left out when there is prose."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    said = [s for p in paragraphs for s in _sentences(p)]
    titled = [s for p in paragraphs if "\n" in p or p.endswith(_ENDED) for s in _sentences(p)]
    return titled or said


def _describe(unit: str, name: str | None, question: str, most: int = 2,
              max_chars: int = 320) -> str:
    """What a unit says about what the question names: its first sentence that names it
    (the first sentence when none does, or no name was copied) and the next, up to ``most``
    sentences; a record (one field a line) as its fields. For a question whose reading adds
    nothing to its own words ("What is X?" read as "X"): the passage's words describe it."""
    if is_record(unit):  # a record: its fields, one after another, each whole
        out = ""
        for line in (x.strip() for x in unit.splitlines() if x.strip()):
            joined = f"{out}; {line}" if out else line
            if out and len(joined) > max_chars:
                break
            out = joined
        return out[:max_chars]
    said = _paragraph_sentences(unit)
    if not said:
        return ""
    start = next((i for i, s in enumerate(said) if name and _names(name, s, question)), 0)
    out = ""
    for s in said[start:start + most]:
        joined = f"{out} {s}".strip() if out and not _CJK.search(s[:1]) else out + s
        if out and len(joined) > max_chars:
            break
        out = joined
    return out


def _whole_sentences(reply: str) -> str:
    """A reply cut by the token limit, without its unfinished last sentence (when a whole one
    comes before it): "... reaches 22 nautical miles. Seals" -> "... 22 nautical miles."."""
    said = _sentences(reply)
    if len(said) < 2 or said[-1].endswith((".", "!", "?", "。", "！", "？")):
        return reply
    return " ".join(said[:-1]) if not _CJK.search(reply) else "".join(said[:-1])


def _cover(name: str, unit: str) -> float:
    """The share of the words of ``name`` (single characters in Chinese) that ``unit`` holds:
    a passage on the "Corran ferry" names "Corran" of a question on the "Corran regatta", not
    the regatta."""
    words = tokens(name)
    return len(words & tokens(unit)) / len(words) if words else 1.0


def _unweighed(own: Sequence[tuple[int, str]], name: str | None, skip_single: bool) -> bool:
    """Whether the one unit naming what is asked is read without weighing (the reader's
    ``skip_single_named``): only when it holds every word of the name (one holding a part of
    it is weighed and judged like the rest)."""
    return (name is not None and len(own) == 1 and skip_single
            and _cover(name, own[0][1]) == 1.0)
