"""Code blocks in Document text: fenced as Markdown writes them, kept verbatim downstream.

Parsers mark code the way Markdown does, a fence line of three or more backticks (or tildes)
before and after it: HTML ``<pre>`` becomes such a block, and Markdown's own fences already
are. The normaliser, enrichment and the chunker tidy only what lies outside the fences, so
indentation, runs of spaces and line breaks of code survive to search results and citations.
A fence that is never closed is not a fence (the text after it is read as prose).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A fence line: up to three spaces, then ``` or ~~~ (or longer), then an info string.
_FENCE = re.compile(r"^ {0,3}(?P<mark>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_BACKTICK_RUN = re.compile(r"`{3,}")


def fence(code: str, info: str = "") -> str:
    """``code`` as a fenced block, the fence longer than any run of backticks inside it."""
    longest = max((len(m.group()) for m in _BACKTICK_RUN.finditer(code)), default=2)
    mark = "`" * max(3, longest + 1)
    return f"{mark}{info}\n{code}\n{mark}"


def code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each closed fenced block in ``text``, fence lines included
    (``end`` is the end of the closing fence line, before its newline)."""
    spans: list[tuple[int, int]] = []
    open_at: int | None = None
    mark = ""
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        m = _FENCE.match(line)
        if m is not None:
            found = m.group("mark")
            if open_at is None:
                open_at, mark = pos, found
            elif found[0] == mark[0] and len(found) >= len(mark) and not m.group("info").strip():
                spans.append((open_at, end))
                open_at = None
        pos = end + 1
    return spans


def split_code(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_code, part) pieces in order; joined, the parts are ``text`` again."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for start, end in code_spans(text):
        if start > pos:
            parts.append((False, text[pos:start]))
        parts.append((True, text[start:end]))
        pos = end
    if pos < len(text) or not parts:
        parts.append((False, text[pos:]))
    return parts


def map_prose(text: str, tidy: Callable[[str], str]) -> str:
    """``text`` with ``tidy`` applied to what lies outside its code blocks only."""
    return "".join(part if is_code else tidy(part) for is_code, part in split_code(text))


def has_code(text: str) -> bool:
    return bool(code_spans(text))


def balanced_piece(text: str, start: int, end: int) -> str:
    """``text[start:end]`` (a chunk of it) readable on its own: a piece that starts inside a
    code block gets that block's opening fence and the indentation of its first line back,
    and one that ends inside a code block gets a closing fence."""
    piece = text[start:end]
    for a, b in code_spans(text):
        if a >= end:
            break
        head_end = text.find("\n", a)
        close_start = text.rfind("\n", 0, b) + 1
        if b <= start or end <= head_end:
            continue
        head = text[a:head_end]
        if head_end < start < close_start:
            line_start = text.rfind("\n", 0, start) + 1
            indent = text[line_start:start]
            piece = f"{head}\n{indent if not indent.strip() else ''}{piece}"
        if end < b:
            mark = head.strip()
            mark = mark[: len(mark) - len(mark.lstrip(mark[0]))]
            piece = f"{piece.rstrip()}\n{mark}"
    return piece
