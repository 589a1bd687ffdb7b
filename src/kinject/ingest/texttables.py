"""Grid tables drawn in plain text (``+----+----+`` borders, ``|`` between cells), as w3m,
lynx and pandoc write them into the text versions of manuals (Debian Reference's
``debian-reference.en.txt`` holds 341), read as rows.

Cells wrap over several printed lines ("/etc/" then "shadow"), so a chunk of the drawing holds
half a file name, and a chunk split between printed lines holds half a row. Each table is
rewritten as one line per row, "Header: value. Header: value." as HTML and CSV tables are,
with every cell's pieces joined. Columns are found from the positions of the ``+`` in a
separator line, counted in display columns (a Chinese character is two wide, as the drawing
was aligned), so a ``|`` inside a cell ("dpkg -L pkg | grep x") stays text. A block that does
not parse as a grid is left as it is. A one-line paragraph just above the table ("Table 1.1.
List of ...") titles it: the blank line between them goes, so the title sits on the rows as an
HTML caption does and the chunker repeats it on every chunk of a long table
(:mod:`kinject.ingest.tableheads`).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["rewrite_grid_tables"]

_BORDER = re.compile(r"\+[-=+]+\+")  # +-----+ and +---+---+
_SEPARATOR = re.compile(r"\|[-=]+(\+[-=]+)+\|")  # |----+----|: the column boundaries
_ROW = re.compile(r"\|.*\|")
# A longer line above a table is the end of a paragraph, not the table's title.
TITLE_MAX = 120


def rewrite_grid_tables(text: str) -> str:
    """``text`` with every grid table drawn in it replaced by its rows, one a line."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _BORDER.fullmatch(lines[i].strip()):
            j = i + 1  # to the bottom border, inclusive
            while j < len(lines) and _ROW.fullmatch(lines[j].strip()):
                j += 1
            if j < len(lines) and _BORDER.fullmatch(lines[j].strip()):
                j += 1
            rows = _read_grid([line.strip() for line in lines[i:j]])
            if rows is not None:
                indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                if _titled(out):
                    out.pop()  # the blank line between the title and the table
                out.extend(indent + row for row in rows)
                i = j
                continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _titled(before: list[str]) -> bool:
    """Whether the lines ``before`` a table end in a title: a short line alone in its
    paragraph, then one blank line."""
    return (len(before) >= 2 and not before[-1].strip() and 0 < len(before[-2].strip()) <= TITLE_MAX
            and (len(before) == 2 or not before[-3].strip()))


def _read_grid(block: list[str]) -> list[str] | None:
    """The rows of a drawn table (top border to bottom border), or None when it is not one."""
    if len(block) < 3 or not _BORDER.fullmatch(block[-1]):
        return None
    separator = next((line for line in block if _SEPARATOR.fullmatch(line)), None)
    if separator is None:
        return None
    bounds = [col for col, ch in enumerate(separator) if ch in "|+"]
    groups: list[list[list[str]]] = []  # row groups: printed lines of cells
    current: list[list[str]] = []
    for line in block[1:-1]:
        if _SEPARATOR.fullmatch(line) or _BORDER.fullmatch(line):
            if current:
                groups.append(current)
            current = []
            continue
        cells = _cells(line, bounds)
        if cells is None:
            return None
        current.append(cells)
    if current:
        groups.append(current)
    if len(groups) < 2:
        return None
    rows = [[_join([printed[c] for printed in group]) for c in range(len(bounds) - 1)]
            for group in groups]
    header = [h or f"column {n}" for n, h in enumerate(rows[0], start=1)]
    out = []
    for cells in rows[1:]:
        pairs = [f"{h}: {_end(v)}" for h, v in zip(header, cells, strict=True) if v]
        if pairs:
            out.append(" ".join(pairs))
    return out


def _cells(line: str, bounds: list[int]) -> list[str] | None:
    """The cells of one printed line, cut at the separator's display columns; None when the
    line's column boundaries are not where the separator's are."""
    cuts: list[int] = []  # character index of each display column boundary
    col = 0
    for index, ch in enumerate(line):
        if col in bounds:
            if ch != "|":
                return None
            cuts.append(index)
        col += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    if len(cuts) != len(bounds):
        return None
    return [line[a + 1:b].strip() for a, b in zip(cuts, cuts[1:], strict=False)]


def _join(pieces: list[str]) -> str:
    """A wrapped cell's printed pieces as one value: "/etc/" + "shadow" is "/etc/shadow"."""
    value = ""
    for piece in pieces:
        if not piece:
            continue
        glue = "" if not value or value.endswith(("/", "-", "_")) or _wide(value[-1]) else " "
        value += glue + piece
    return value


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _end(value: str) -> str:
    return value if value.endswith((".", "!", "?", "。", "！", "？")) else f"{value}."
