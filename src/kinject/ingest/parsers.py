"""One parser per text kind: a Record's bytes become Documents whose text reads on its own.

Structured sources are rendered as labelled prose ("Keeper: Orla Brisk.") so a single row
or object can be retrieved and answered from without its neighbours. Images live in
:mod:`kinject.ingest.image`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from kinject.errors import BadRecord, UnsupportedSource
from kinject.ingest.codeblocks import fence
from kinject.ingest.sniff import bom_encoding, csv_delimiter
from kinject.ingest.texttables import rewrite_grid_tables
from kinject.types import Document, Record

log = logging.getLogger(__name__)

Parser = Callable[[Record, str], list[Document]]

_MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), or UTF-16/UTF-32 marked by their BOM; BadRecord(stage=
    "parse") otherwise."""
    encoding = bom_encoding(data)
    if encoding is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRecord(f"content is not UTF-8 text (bad byte at offset {exc.start})",
                            stage="parse") from exc
    else:
        text = _decode_marked(data, encoding)
    if "\x00" in text:
        raise BadRecord("content looks binary (contains NUL characters), not text", stage="parse")
    return text


def _decode_marked(data: bytes, encoding: str) -> str:
    """Text behind a UTF-16/32 byte-order mark. A trailing partial code unit (a file cut
    short, or a stray newline byte) is dropped and an unpaired surrogate becomes U+FFFD, as
    long as such damage stays rare; many broken units mean it is not that encoding."""
    width = 4 if encoding == "utf-32" else 2
    extra = len(data) % width
    if extra:
        log.info("dropping %d trailing byte(s) that do not make a %s code unit", extra,
                 encoding.upper())
        data = data[: len(data) - extra]
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        text = data.decode(encoding, errors="replace")
    broken = text.count("\ufffd")
    if broken > max(1, len(text) // 100):
        raise BadRecord(f"content starts with a {encoding.upper()} byte-order mark, but "
                        f"{broken} of its {len(text)} characters are not valid "
                        f"{encoding.upper()}", stage="parse")
    log.info("%d invalid %s code unit(s) replaced by U+FFFD", broken, encoding.upper())
    return text


def doc_id(source_id: str, unit: str = "") -> str:
    """A readable, stable document id: the source id, plus the unit within it."""
    return f"{source_id}#{unit}" if unit else source_id


def parse_text(record: Record, kind: str) -> list[Document]:
    """Plain text and Markdown: one Document; the title is meta["title"], a heading or the file."""
    text = decode_text(record.content)
    if kind == "text":  # a manual's text version draws its tables: read them as rows
        text = rewrite_grid_tables(text)
    if kind == "markdown":  # code indented by four spaces is code, as fenced code is
        text = fence_indented_code(text)
    title = str(record.meta.get("title") or "")
    if not title and kind == "markdown":
        m = _MD_HEADING.search(text)
        title = m.group(1) if m else ""
    title = title or str(record.meta.get("filename") or "")
    meta = {**record.meta, "unit": "file"}
    return [
        Document(doc_id(record.source_id), record.source_id, text, kind, title=title, meta=meta)
    ]


def fence_indented_code(text: str) -> str:
    """Markdown with its indented code blocks (at the top level) written as fenced ones, so
    that normalising keeps their layout (:mod:`kinject.ingest.codeblocks`)."""
    from markdown_it import MarkdownIt

    blocks = [t for t in MarkdownIt("commonmark").parse(text)
              if t.type == "code_block" and t.level == 0 and t.map]
    if not blocks:
        return text
    lines = text.split("\n")
    for block in reversed(blocks):
        assert block.map is not None
        start, end = block.map
        lines[start:end] = fence(block.content.rstrip()).split("\n")
    return "\n".join(lines)


def parse_table(record: Record, kind: str) -> list[Document]:
    """CSV/TSV: one Document per row, reading "Header: value. Header: value."

    The row itself is kept in ``meta["row"]`` (header -> value) for filters and display.
    """
    text = decode_text(record.content)
    delim = "\t" if kind == "tsv" else (csv_delimiter(text) or ",")
    rows = _csv_rows(text, delim, kind)
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return []
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    table = str(record.meta.get("title") or record.meta.get("filename") or "")
    docs = []
    for n, cells in enumerate(rows[1:], start=1):
        labels = header + [f"column {i + 1}" for i in range(len(header), len(cells))]
        row = {label: cell.strip() for label, cell in zip(labels, cells, strict=False)}
        sentence = " ".join(f"{k}: {_sentence(v)}" for k, v in row.items() if v)
        if not sentence:
            continue
        first = next((v for v in row.values() if v), "")
        meta = {**record.meta, "unit": "row", "row": row, "row_index": n}
        docs.append(
            Document(
                doc_id(record.source_id, f"row-{n}"),
                record.source_id,
                sentence,
                kind,
                title=f"{table}: {first}" if table else first,
                meta=meta,
            )
        )
    return docs


def _csv_rows(text: str, delim: str, kind: str) -> list[list[str]]:
    """The rows; a quoted field never closed is refused, naming the line it opens on: read
    leniently it swallows every later row into one cell and the file is indexed wrong."""
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    rows: list[list[str]] = []
    start = end = 0  # the lines the last row spans
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            rows.append(row)
    except csv.Error as exc:
        raise BadRecord(f"{kind} is malformed: {exc}", stage="parse") from exc
    if rows and rows[-1] and reader.dialect.quotechar:
        # csv ends a quoted field at the end of the data without an error; re-read the last
        # row strictly to tell a closed quote from one that ran to the end of the file
        tail = "".join(io.StringIO(text).readlines()[start - 1 :])  # the lines csv counted
        try:
            list(csv.reader(io.StringIO(tail), delimiter=delim, strict=True))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise BadRecord(
                    f"{kind} is malformed: a quoted field opened on line {start} is never "
                    "closed (a stray '\"'?), so every later line would be read as one cell",
                    stage="parse",
                ) from exc
    return rows


def parse_sql_row(record: Record, kind: str) -> list[Document]:
    """SQL: one row as ``kinject ingest-sql`` publishes it (a JSON object of column -> value)
    becomes one Document reading "Column: value. Column: value.", like a CSV row."""
    try:
        row = json.loads(decode_text(record.content))
    except (ValueError, RecursionError):
        row = None
    if not isinstance(row, dict):
        raise UnsupportedSource(
            "kind 'sql' is a table row as `kinject ingest-sql` publishes it (a JSON object of "
            "column -> value); other SQL content, such as a script, cannot be ingested",
            stage="parse",
        )
    shown = {
        k: f"{v['bytes']} bytes of binary data" if _is_binary(v) else v for k, v in row.items()
    }
    from kinject.ingest.json_parsers import flatten_json

    lines = [
        line
        for k, v in row.items()
        if not _is_binary(v) and v != ""
        for line in flatten_json(v, str(k))
    ]
    if not lines:
        return []
    # the first text value names the row ("Gullspire"), else its key
    first = next((v for v in row.values() if isinstance(v, str) and v.strip()), "")
    first = first or str(record.meta.get("key") or "")
    table = str(record.meta.get("table") or "")
    return [
        Document(
            doc_id(record.source_id),
            record.source_id,
            " ".join(_sentence(line) for line in lines),
            kind,
            title=f"{table}: {first}" if table else first,
            meta={**record.meta, "unit": "row", "row": shown},
        )
    ]


def parse_markup(record: Record, kind: str) -> list[Document]:
    """HTML or XML, by :mod:`kinject.ingest.markup` (imported on first use)."""
    from kinject.ingest.markup import parse_html, parse_xml

    return parse_html(record, kind) if kind == "html" else parse_xml(record, kind)


def parse_pdf(record: Record, kind: str) -> list[Document]:
    """PDF pages, by :mod:`kinject.ingest.pdf`; OCR "auto" (the pipeline passes its engine)."""
    from kinject.ingest.pdf import parse_pdf as parse

    return parse(record, kind)


def parse_json(record: Record, kind: str) -> list[Document]:
    """JSON, by :mod:`kinject.ingest.json_parsers`."""
    from kinject.ingest.json_parsers import parse_json as parse

    return parse(record, kind)


def parse_jsonl(record: Record, kind: str) -> list[Document]:
    """JSON Lines, by :mod:`kinject.ingest.json_parsers`."""
    from kinject.ingest.json_parsers import parse_jsonl as parse

    return parse(record, kind)


PARSERS: dict[str, Parser] = {
    "text": parse_text,
    "markdown": parse_text,
    "csv": parse_table,
    "tsv": parse_table,
    "json": parse_json,
    "jsonl": parse_jsonl,
    "html": parse_markup,
    "xml": parse_markup,
    "pdf": parse_pdf,
    "sql": parse_sql_row,
}


def parse_documents(record: Record, kind: str) -> list[Document]:
    """Documents for a text kind; UnsupportedSource for a kind with no parser yet."""
    parser = PARSERS.get(kind)
    if parser is None:
        supported = ", ".join([*sorted(PARSERS), "image"])
        raise UnsupportedSource(
            f"kind {kind!r} cannot be ingested yet (supported: {supported})",
            stage="parse",
        )
    return parser(record, kind)


def _is_binary(value: Any) -> bool:  # bytes as ingest-sql writes them
    return isinstance(value, dict) and set(value) == {"base64", "bytes"}


def _sentence(value: str) -> str:
    value = value.strip()
    return value if value.endswith((".", "!", "?", "。", "！", "？")) else f"{value}."
