"""Tables in Document text, and the head every chunk of a long one repeats.

Parsers write a table's rows one a line: "Header: value. Header: value." for HTML and
w3m-drawn tables (:mod:`.markup`, :mod:`.texttables`), so each row names its columns;
Markdown keeps its "| a | b |" rows under a header line and a delimiter line. The line right
above the rows titles the table when it is no row itself: an HTML ``<caption>``, a DocBook
title, the "Table 1.1. ..." line of a w3m dump, a line ending in ":" that introduces the
table; a Markdown heading above a pipe table, with at most one blank line between, titles it
too. A chunk cut from the middle of a long table starts with that title (and a Markdown
table's header and delimiter lines), so a question naming the table finds it and its
values keep the names of their columns. (A CSV row is a Document, and a chunk, of its own.)
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from kinject.ingest.codeblocks import code_spans

__all__ = ["Table", "find_tables"]

# "Header: value. Header: value.": a label of a few words, then a value; the row ends a sentence.
_LABELLED = re.compile(r"^\s*(?P<label>[^:\s][^:\n]{0,59}): \S.*[.!?。！？]$")
_PIPE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_PIPE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
# A title line longer than this is prose, not a title.
TITLE_MAX = 200


@dataclass(frozen=True)
class Table:
    """A run of table rows in a text: ``text[start:end]`` are its rows (for Markdown the
    rows under the delimiter), ``head`` what stands above them (title, Markdown header and
    delimiter; "" when nothing), starting at ``head_start``."""

    head_start: int
    start: int
    end: int
    title: str
    header: str


def find_tables(text: str) -> list[Table]:
    """The tables of two rows or more in ``text`` (outside fenced code), in order."""
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    in_code = [False] * len(lines)
    for start, end in code_spans(text):  # fences start and end at line starts and ends
        for n in range(bisect_left(offsets, start), bisect_right(offsets, end)):
            in_code[n] = True
    tables: list[Table] = []
    i = 0
    while i < len(lines):
        found = None if in_code[i] else _run_at(lines, in_code, i)
        if found is None:
            i += 1
            continue
        first, end, header = found
        head_first = first - (2 if header else 0)
        title_at = _title_line(lines, in_code, head_first, markdown=bool(header))
        title = lines[title_at].strip() if title_at is not None else ""
        head_start = offsets[title_at if title_at is not None else head_first]
        if title or header:
            tables.append(Table(head_start, offsets[first], offsets[end] - 1, title, header))
        i = end
    return tables


def _run_at(lines: list[str], in_code: list[bool], i: int) -> tuple[int, int, str] | None:
    """(first row, line after the last row, Markdown header and delimiter or "") of a table
    starting at line ``i``, or None."""
    if (_PIPE_ROW.match(lines[i]) and i + 1 < len(lines) and not in_code[i + 1]
            and _PIPE_DELIMITER.match(lines[i + 1]) and "|" in lines[i + 1]):
        end = i + 2
        while end < len(lines) and not in_code[end] and _PIPE_ROW.match(lines[end]):
            end += 1
        if end - (i + 2) >= 2:
            return i + 2, end, f"{lines[i].strip()}\n{lines[i + 1].strip()}"
        return None
    m = _LABELLED.match(lines[i])
    if m is None:
        return None
    label = m.group("label").strip()
    end = i + 1
    same = 1  # rows of one table mostly start with the same column
    while end < len(lines) and not in_code[end] and (row := _LABELLED.match(lines[end])):
        same += row.group("label").strip() == label
        end += 1
    return (i, end, "") if same >= 2 and same * 2 > end - i else None


def _title_line(lines: list[str], in_code: list[bool], first: int, *,
                markdown: bool) -> int | None:
    """The line that titles the table whose head starts at line ``first``, or None."""
    above = first - 1
    if above >= 0 and not in_code[above] and (line := lines[above].strip()):
        if len(line) <= TITLE_MAX and not _LABELLED.match(lines[above]) \
                and not _PIPE_ROW.match(lines[above]):
            return above
        return None
    if markdown:  # a heading, a blank line, the table
        above = first - 2
        if above >= 0 and not in_code[above] and _MD_HEADING.match(lines[above]) \
                and len(lines[above].strip()) <= TITLE_MAX:
            return above
    return None
