"""Split Documents into Chunks at paragraph, sentence (Chinese and English) and word breaks."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from kinject.ingest.codeblocks import balanced_piece, has_code, map_prose
from kinject.ingest.normalise import detect_lang, normalise_text
from kinject.ingest.tableheads import Table, find_tables
from kinject.types import Chunk, Document, content_hash

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_text_splitters import RecursiveCharacterTextSplitter

# Coarsest first. Chinese sentence enders need no following space; English ones do, so
# "3.5" and "e.g." are not split. The empty string lets an over-long run split anywhere.
SEPARATORS: tuple[str, ...] = (
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    ". ",
    "! ",
    "? ",
    "; ",
    "，",
    ", ",
    " ",
    "",
)
# Rows and list items are kept whole up to this many chunk sizes: a row split in half
# loses its header labels and cannot answer a question on its own.
ATOMIC_UNITS = frozenset({"row", "item"})
ATOMIC_FACTOR = 4
# A section's heading path takes at most this share of a chunk's size; the rest is its text.
HEADING_SHARE = 0.5
# A long table's head (its title, a Markdown table's header) repeated on each of its chunks
# takes at most this share of what is left; a longer title is cut at a word.
TABLE_SHARE = 0.3
# The splitter can leave two spaces where a kept separator meets the next piece.
_RUNS_OF_SPACES = re.compile(r"[ \t]{2,}")


@lru_cache(maxsize=16)
def _splitter(size: int, overlap: int) -> RecursiveCharacterTextSplitter:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        separators=list(SEPARATORS),
        keep_separator="end",
        strip_whitespace=True,
    )


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Pieces of at most ``size`` characters (where breaks allow), overlapping by ``overlap``."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(
            f"need size > 0 and 0 <= overlap < size, got size={size}, overlap={overlap}"
        )
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    pieces = _splitter(size, overlap).split_text(text)
    if has_code(text):  # each piece with code reads on its own: fenced, first line indented
        pieces = list(_balanced(text, pieces, overlap))
    tidied = (map_prose(p, lambda prose: _RUNS_OF_SPACES.sub(" ", prose)).strip()
              for p in pieces)
    return [p for p in tidied if p]


def _balanced(text: str, pieces: list[str], overlap: int) -> Iterator[str]:
    """``pieces`` of ``text`` (in order, each a substring of it) with the fences and the
    indentation a split through a code block cut off put back; found as langchain's
    ``add_start_index`` finds them."""
    index = length = 0
    for piece in pieces:
        index = text.find(piece, max(0, index + length - overlap))
        if index < 0:
            index = length = 0
            yield piece
            continue
        length = len(piece)
        yield balanced_piece(text, index, index + length)


def chunk_document(doc: Document, size: int, overlap: int) -> list[Chunk]:
    """Chunks of ``doc``; ``chunk_id = content_hash(source_id, text)``, so replays are idempotent.

    A chunk's meta is the document's meta plus its title. Repeated text within a document
    yields one chunk. A section (``meta["section"]``, its heading path, which the parser put
    at the head of its text) is split without that path, and every chunk starts with it
    ("Install > Linux: ..."), so a question naming the section finds its second chunk too;
    the path counts towards ``size``. Likewise every chunk of a table longer than ``size``
    starts with the table's title (and a Markdown table's header row), found as
    :mod:`kinject.ingest.tableheads` describes.
    """
    text = doc.text.strip()
    heading, body = _heading_and_body(doc, text)
    if doc.meta.get("unit") in ATOMIC_UNITS and len(text) <= size * ATOMIC_FACTOR:
        pieces = [text] if text else []
    elif heading and body:
        budget = max(size - len(heading) - 2, int(size * (1 - HEADING_SHARE)))
        pieces = [_under(heading, piece)
                  for piece in _split_tables(body, budget, min(overlap, budget // 2))]
    else:
        pieces = _split_tables(text, size, overlap)
    meta = {**doc.meta, "title": doc.title} if doc.title else dict(doc.meta)
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for piece in pieces:
        cid = content_hash(doc.source_id, piece)
        if cid in seen:
            continue
        seen.add(cid)
        chunks.append(
            Chunk(
                cid,
                doc.doc_id,
                doc.source_id,
                piece,
                ordinal=len(chunks),
                lang=detect_lang(piece),
                kind=doc.kind,
                meta=meta,
            )
        )
    return chunks


def _split_tables(text: str, size: int, overlap: int) -> list[str]:
    """:func:`split_text`, but each table longer than ``size`` whose head (title, Markdown
    header) fits its share is split on its own: the first piece holds the head whole, every
    later one starts with it (a title too long for its share cut at a word)."""
    text = text.strip()
    tables = [(t, head) for t in find_tables(text)
              if t.end - t.head_start > size and (head := _table_head(t, int(size * TABLE_SHARE)))]
    if not tables:
        return split_text(text, size, overlap)
    pieces: list[str] = []
    pos = 0
    for table, head in tables:
        pieces += split_text(text[pos:table.head_start], size, overlap)
        budget = max(size - len(head) - 1, int(size * (1 - TABLE_SHARE)))
        # the head right on the rows (no blank line under a Markdown heading), so the first
        # piece holds it whole and no piece holds it alone
        whole = "\n".join(filter(None, (table.title, table.header, text[table.start:table.end])))
        parts = split_text(whole, budget, min(overlap, budget // 2))
        pieces += [p if n == 0 or p.startswith(head) else f"{head}\n{p}"
                   for n, p in enumerate(parts)]
        pos = table.end
    pieces += split_text(text[pos:], size, overlap)
    return pieces


def _table_head(table: Table, limit: int) -> str:
    """The table's title and Markdown header, within ``limit`` characters where the header
    leaves room: the title is cut at a word, and dropped before the header is."""
    if table.header and len(table.header) > limit:
        return _cut(table.title, limit)
    if not table.header:
        return _cut(table.title, limit)
    if not table.title:
        return table.header
    title = _cut(table.title, limit - len(table.header) - 1)
    return f"{title}\n{table.header}" if title else table.header


def _cut(title: str, limit: int) -> str:
    if len(title) <= limit:
        return title
    if limit < 8:
        return ""
    cut = title[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return f"{cut}…"


def _heading_and_body(doc: Document, text: str) -> tuple[str, str]:
    """The section's heading path and its text after the "path:" the parser wrote; ("", text)
    when the document is no section or its text does not start with its path."""
    section = doc.meta.get("section")
    if not isinstance(section, str) or not (path := normalise_text(section).strip()):
        return "", text
    if not text.startswith(f"{path}:"):
        return "", text
    return path, text[len(path) + 1:].strip()


def _under(heading: str, piece: str) -> str:
    """``piece`` under its heading path, as the parser writes a section: on the same line,
    or on a line of its own when the first block is several lines (a table, code)."""
    if piece.startswith(f"{heading}:"):
        return piece
    sep = "\n" if "\n" in piece.split("\n\n", 1)[0] else " "
    return f"{heading}:{sep}{piece}"
