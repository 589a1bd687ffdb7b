"""The shape of a passage, for the reader: table rows as records, and answers as whole spans.

A small model reading a markdown table loses track of which column a cell sits in and which row
it belongs to; the same row written as ``header: value`` lines is read right. A table is
therefore split into one record per row (each read on its own, so the row of one entity is
never confused with the next), and every other passage is kept whole.

An answer the model writes is then mapped back onto the words of what it read: a piece of a
record's value becomes the whole value (``619 t`` of ``619 tonnes (619 t)``), a piece of a word
becomes the whole word (accents, hyphens and dotted codes kept), and a number whose unit the
model spelled out takes the passage's own unit (``148 meters`` -> ``148 m``). Only the shape of
the text is used, never what its words mean.
"""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
# "Name: value" on one line; a colon between two digits is a time or a ratio ("opens at
# 09:30"), not the end of a field's name.
_FIELD = re.compile(r"^\s*([^:：\n]{1,40}?)\s*(?:(?<!\d)[:：]|[:：](?!\d))\s*(\S.*?)\s*$")
_CJK = re.compile(r"[\u3400-\u9fff]")


def _cells(line: str) -> list[str]:
    m = _ROW.match(line)
    return [c.strip() for c in m.group(1).split("|")] if m else []


# A field of a row written on one line as "Header: value. Header: value." (how ingest writes a
# CSV row or an HTML table's row): a name at the line's start or after a sentence's end, then
# ": " (Chinese punctuation is folded to ASCII by ingest).
_INLINE_KEY = re.compile(
    r"(?:^|(?<=[.!?。！？])\s+)([^\s:：.!?。！？][^:：\n.!?。！？]{0,39}?)[:：]\s+")


def _inline_spans(line: str) -> list[tuple[str, int, tuple[int, int], tuple[int, int]]]:
    """``[(header, field start, header span, value span), ...]`` of a "Header: value. Header:
    value." line, positions in ``line`` (the sentence end that closes each value left out); []
    when the line is not one (fewer than two fields, text before the first, an empty value)."""
    lead = len(line) - len(line.lstrip())
    text = line.strip()
    keys = list(_INLINE_KEY.finditer(text))
    if len(keys) < 2 or keys[0].start() != 0:
        return []
    out = []
    for k, nxt in zip(keys, [*keys[1:], None], strict=True):
        value = text[k.end(): nxt.start() if nxt is not None else len(text)].rstrip()
        if value[-1:] in ".。" and not value[:-1].endswith((".", "。")):
            value = value[:-1].rstrip()
        if not value:
            return []
        out.append((k.group(1).strip(), lead + k.start(), (lead + k.start(1), lead + k.end(1)),
                    (lead + k.end(), lead + k.end() + len(value))))
    return out


def _inline_fields(line: str) -> list[tuple[str, str]]:
    """``[(header, value), ...]`` of a "Header: value. Header: value." line; [] when the line
    is not one (``_inline_spans``)."""
    return [(header, line[v0:v1]) for header, _, _, (v0, v1) in _inline_spans(line)]


def reading_units(passage: str) -> list[str]:
    """The pieces the reader reads one at a time: each row of a markdown table as
    ``header: value`` lines (after the table's caption, if any); any other passage whole
    (rows written "Header: value. Header: value.", one a line, are read together: the model
    finds the row better than the question's likelihood does, and :func:`cell` then takes
    the cell asked for)."""
    lines = passage.splitlines()
    for i in range(len(lines) - 1):
        header = _cells(lines[i])
        if len(header) < 2 or not _RULE.match(lines[i + 1]):
            continue
        caption = " ".join(x.strip() for x in lines[:i] if x.strip())
        rows = []
        for line in lines[i + 2:]:
            cells = _cells(line)
            if len(cells) != len(header):
                break
            rows.append("\n".join(f"{h}: {c}" for h, c in zip(header, cells, strict=True)))
        if not rows:
            break
        rest = " ".join(x.strip() for x in lines[i + 2 + len(rows):] if x.strip())
        head = f"{caption}\n" if caption else ""
        tail = f"\n{rest}" if rest else ""
        return [f"{head}{row}{tail}" for row in rows]
    return [passage]


def is_record(unit: str) -> bool:
    """Whether ``unit`` is a record: two or more lines, most of them ``Name: value`` fields
    (a table row as read, a JSON object flattened), not prose whose sentences wrap."""
    lines = [line for line in unit.splitlines() if line.strip()]
    fields = sum(1 for line in lines if _FIELD.match(line))
    return fields >= 2 and 2 * fields > len(lines)


def _folded(text: str) -> str:
    return _fold(text, spaces=False)[0]


def _shared(a: str, b: str) -> int:
    """The length of the longest run of characters ``a`` and ``b`` share."""
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match().size


def cell(answer: str, unit: str, question: str) -> str | None:
    """The cell of a "Header: value. Header: value." row of ``unit`` that answers, when the
    reading is that row (two or more of its values) or the one value of it the question
    itself names (an echo): the value under the header the question shares the longest run
    of letters with, else the first value the question does not hold. None when the reading is no
    such thing (then it stands as read). Only the row's shape and the question's own words
    are used."""
    said, asked = _folded(answer), _folded(question)
    if not said:
        return None
    for line in unit.splitlines():
        fields = _inline_fields(line)
        values = [(k, v, _folded(v)) for k, v in fields]
        held = [fv for _, v, fv in values if fv and fv in said and _holds(answer, v)]
        echo = len(held) == 1 and held[0] == said and said in asked
        if len(held) < 2 and not echo:
            continue
        # The header the question shares the longest run of letters with ("command" of
        # "Command snippets", "命令" of "命令片段"); two letters at least.
        shared = [(_shared(_folded(k), asked), -i, v) for i, (k, v, _) in enumerate(values)]
        best = max(shared)
        if best[0] >= 2:
            return _unquoted(best[2])
        rest = [v for _, v, fv in values if fv not in asked]
        return _unquoted(rest[0]) if rest else None
    return None


def _holds(answer: str, value: str) -> bool:
    """Whether ``answer`` holds ``value`` as whole words: "2" of "2350" is not held, nor
    "art" of "party". A value found only with the spaces folded away (the model's tokens split
    it: "Valpara í") is held."""
    text, val = _fold(answer)[0], _fold(value)[0].strip()
    at = [m.start() for m in re.finditer(re.escape(val), text)] if val else []
    if not at:
        return True
    return any((i == 0 or not (_inner(text[i - 1]) and _inner(val[0])))
               and (i + len(val) == len(text)
                    or not (_inner(text[i + len(val)]) and _inner(val[-1])))
               for i in at)


def _fold(text: str, spaces: bool = True) -> tuple[str, list[int]]:
    """NFKC, lower case, runs of space as one (or none); and where each folded character came
    from."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).lower():
            if c.isspace():
                if not spaces or (out and out[-1] == " "):
                    continue
                c = " "
            out.append(c)
            where.append(i)
    return "".join(out), where


def _inner(ch: str) -> bool:
    """A character that continues a word (not Chinese, which has no spaces between words)."""
    # A currency sign sticks to its amount ("$389", "€12").
    return ((ch.isalnum() and not _CJK.match(ch)) or unicodedata.category(ch) in ("Mn", "Sc"))


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow [start, end) to whole words; joiners (``-``, ``.``, ``'``, ``_``, ``/``) inside a
    word keep it whole ("AQN-SETUP-486", "v2.1.3", "Valparaíso")."""
    def joined(i: int) -> bool:
        return (0 < i < len(text) - 1 and text[i] in "-.'’_/" and _inner(text[i - 1])
                and _inner(text[i + 1]))

    def part(i: int) -> bool:
        return _inner(text[i]) or joined(i)

    while start > 0 and part(start - 1) and part(start):
        start -= 1
    while end < len(text) and part(end) and part(end - 1):
        end += 1
    return start, end


def _find(answer: str, text: str) -> list[tuple[int, int]]:
    """Where ``answer`` stands in ``text`` (case, width and spacing folded; then with no
    spaces at all, for a word the model's tokens split: "Valpara í"): every place, those of
    whole words first."""
    for spaces in (True, False):
        hay, where = _fold(text, spaces)
        needle = _fold(answer, spaces)[0].strip()
        found = []
        at = hay.find(needle) if needle else -1
        while at >= 0:
            found.append((where[at], where[at + len(needle) - 1] + 1))
            at = hay.find(needle, at + 1)
        # Prefer a match of whole words ("3,925 t" is in "3,925 tonnes (3,925 t)" twice).
        if found:
            return sorted(found, key=lambda f: not (
                (f[0] == 0 or not _inner(text[f[0] - 1]))
                and (f[1] == len(text) or not _inner(text[f[1]]))))
    return []


_NUMBER_UNIT = re.compile(r"(\d[\d,.]*)\s*([^\W\d_]+)")


def _abbreviates(short: str, long: str) -> bool:
    """``kg`` of ``kilograms``: the same first letter, then the rest in order."""
    rest = iter(long[1:])
    return short[0] == long[0] and all(c in rest for c in short[1:])


def _with_own_unit(answer: str, text: str) -> tuple[int, int] | None:
    """``148 meters`` where the text says ``148 m``: the number, then the text's unit if it
    begins as the answer's does."""
    m = _NUMBER_UNIT.fullmatch(answer.strip())
    if not m:
        return None
    number, unit = m.group(1), m.group(2).lower()
    for found in re.finditer(r"(?<![\d.,])" + re.escape(number) + r"\s*([^\W\d_]+)", text):
        own = found.group(1).lower()
        if own == unit or (len(own) < len(unit) and _abbreviates(own, unit)):
            return found.start(), found.end()
    return None


def _value_of(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The whole value of the ``field: value`` line holding [start, end), if it lies inside
    the value or is the field's name (the model named the field it meant)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if "\n" in text[start:end]:
        return None
    inline = _inline_value(text[line_start:line_end], start - line_start, end - line_start)
    if inline is not None:  # one field of a "Header: value. Header: value." row
        return line_start + inline[0], line_start + inline[1]
    m = _FIELD.match(text[line_start:line_end])
    if not m:
        return None
    key = (line_start + m.start(1), line_start + m.end(1))
    if line_start + m.start(2) > start and not (start <= key[0] and end >= key[1]):
        return None
    return line_start + m.start(2), line_start + m.end(2)


def _inline_value(line: str, start: int, end: int) -> tuple[int, int] | None:
    """The value span of the field of a "Header: value. Header: value." ``line`` that holds
    [start, end) (or whose header it is); None when the line is no such row or the span
    crosses fields (a reading of the whole row: ``cell`` picks from it)."""
    for _, at, (k0, k1), (v0, v1) in _inline_spans(line):
        if v0 <= start and end <= v1 or at <= start <= k0 and k1 <= end <= v1:
            return v0, v1
    return None


_CJK_AMOUNT = re.compile(r"(?:\d[\d.,]*\s*[\u3400-\u9fff]?)+$")


def _before_parenthesis(text: str, start: int, end: int) -> tuple[int, int]:
    """An answer that is the gloss in ``X (Y)`` takes X with it: ``3,925 tonnes (3,925 t)``,
    ``October 14, 1957 (1957-10-14)``. X is the run of words before the bracket that hold a
    digit, are capitalised, or follow a number (its unit); in Chinese, a number with the
    characters that follow its digits (``1955年9月10日``)."""
    opening = text.rfind("(", 0, start)
    closing = text.find(")", end)
    if (opening < 0 or closing < 0 or ")" in text[opening:start]
            or "(" in text[end:closing] or text[opening + 1:start].strip()):
        return start, end
    head = text[:opening].rstrip()
    if head and _CJK.match(head[-1]) or head[-1:].isdigit() and _CJK.search(head[-12:]):
        m = _CJK_AMOUNT.search(head)
        return (m.start(), closing + 1) if m else (start, end)
    words = list(re.finditer(r"\S+", head))
    keep = len(words)
    for i in range(len(words) - 1, -1, -1):
        w = words[i].group()
        after_number = i > 0 and any(c.isdigit() for c in words[i - 1].group())
        if any(c.isdigit() for c in w) or w[:1].isupper() or after_number:
            keep = i
        else:
            break
    if keep == len(words):
        return start, end
    return words[keep].start(), closing + 1


_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」"}


def _unquoted(value: str) -> str:
    """A value a table cell puts in quotes (a command snippet: '"systemctl get-default"')
    without them, when they enclose it whole."""
    if len(value) > 2 and _QUOTES.get(value[0]) == value[-1] and value[-1] not in value[1:-1]:
        return value[1:-1].strip()
    return value


def snap(answer: str, text: str) -> str:
    """``answer`` as a whole span of ``text`` when it is one (a record's whole value, whole
    words); otherwise ``answer`` unchanged."""
    unit = _with_own_unit(answer, text)
    found = _find(answer, text) or ([unit] if unit else [])
    if not found:
        return answer
    if "\n" in text:  # a record: the whole value of its field, one it equals first
        values = [(f, _value_of(text, *f)) for f in found]
        for _, value in sorted(values, key=lambda fv: fv[0] != fv[1]):
            if value is not None:
                return _unquoted(text[value[0]:value[1]])
    start, end = found[0]
    start, end = _before_parenthesis(text, *_whole_words(text, start, end))
    return text[start:end].strip()
