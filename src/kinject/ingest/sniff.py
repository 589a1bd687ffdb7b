"""Guess what kind of payload a record carries: magic bytes, then file name, then content."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import PurePath
from xml.etree import ElementTree

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
    (b"BM", "image"),
    (b"%PDF-", "pdf"),
    (b"fLaC", "audio"),
    (b"OggS", "audio"),
    (b"ID3", "audio"),  # an MP3 with ID3 tags
)

EXTENSIONS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xml": "xml",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".pdf": "pdf",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".gif": "image",
    ".webp": "image",
    ".bmp": "image",
    ".sql": "sql",
    ".wav": "audio",
    ".mp3": "audio",
    ".ogg": "audio",
    ".oga": "audio",
    ".opus": "audio",
    ".flac": "audio",
}

# UTF-32's little-endian mark begins with UTF-16's: test it first.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_DELIMITERS = (",", "\t", ";", "|")
_HTML_HINT = re.compile(
    r"<!doctype\s+html|<html[\s>]|<body[\s>]|<head[\s>]|<(p|div|h[1-6])[\s>]", re.IGNORECASE
)
_MD_HINT = re.compile(r"^(#{1,6} \S|```|\* \S|- \S|\d+\. \S)", re.MULTILINE)
_SNIFF_BYTES = 64 * 1024
_SENTENCE_END = (".", "!", "?", "。", "！", "？")


def sniff_kind(data: bytes, filename: str | None = None) -> str:
    """Return the kind (one of ``kinject.types.KINDS``) that ``data`` most likely is.

    Magic bytes win over the file name (a PNG named ``notes.txt`` is an image), the file
    name wins over content, and content decides the rest. Undecodable bytes of no known
    format come back as ``"text"``; the text parser then rejects them with a clear error.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    if _is_mpeg_audio(data):
        return "audio"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if filename:
        kind_by_ext = EXTENSIONS.get(PurePath(filename).suffix.lower())
        if kind_by_ext is not None:
            return kind_by_ext
    return _sniff_text(data)


def _is_mpeg_audio(data: bytes) -> bool:
    """An MP3 without ID3 tags: it starts with an MPEG audio frame header (11 sync bits, an
    MPEG version that is not reserved, layer III, a valid bitrate and sample rate). Layer III
    only: UTF-16's little-endian mark (FF FE) reads as a layer I header."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version, layer = (data[1] >> 3) & 0b11, (data[1] >> 1) & 0b11
    bitrate, rate = data[2] >> 4, (data[2] >> 2) & 0b11
    return version != 0b01 and layer == 0b01 and bitrate not in (0, 0xF) and rate != 0b11


def bom_encoding(data: bytes) -> str | None:
    """``"utf-16"`` or ``"utf-32"`` when ``data`` starts with that byte-order mark."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def _sniff_text(data: bytes) -> str:
    encoding = bom_encoding(data)
    if encoding is not None:
        # errors="replace": a code unit cut at the window's end
        text = data[:_SNIFF_BYTES].decode(encoding, errors="replace")
    else:
        try:
            text = data[:_SNIFF_BYTES].decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            if exc.start < len(data[:_SNIFF_BYTES]) - 4:  # not just a character cut at the end
                return "text"
            text = data[: exc.start].decode("utf-8-sig")
    head = text.lstrip()
    if not head:
        return "text"
    if head[0] in "{[" and _is_json(data):
        return "json"
    if head[0] == "{" and _is_jsonl(text):
        return "jsonl"
    if head[0] == "<":
        if _HTML_HINT.search(head[:4096]):
            return "html"
        if head.startswith("<?xml") or _is_xml(text):
            return "xml"
    if csv_delimiter(text) is not None:
        return "tsv" if csv_delimiter(text) == "\t" else "csv"
    if _MD_HINT.search(head[:4096]):
        return "markdown"
    return "text"


def csv_delimiter(text: str, max_lines: int = 20) -> str | None:
    """The delimiter that splits the first lines of ``text`` into a consistent table, if any.

    A table needs at least two lines, at least two columns, the same number of fields on
    every line, and short header cells that do not end a sentence (prose with commas
    fails one or the other).
    """
    lines = [ln for ln in text.splitlines()[:max_lines] if ln.strip()]
    if len(lines) < 2:
        return None
    sample = "\n".join(lines)
    for delim in _DELIMITERS:
        if delim not in lines[0]:
            continue
        try:
            rows = list(csv.reader(io.StringIO(sample), delimiter=delim))
        except csv.Error:
            continue
        widths = {len(r) for r in rows}
        if len(widths) != 1 or widths.pop() < 2:
            continue
        header = [cell.strip() for cell in rows[0]]
        if all(0 < len(cell) <= 64 and not cell.endswith(_SENTENCE_END) for cell in header):
            return delim
    return None


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _is_jsonl(text: str) -> bool:
    lines = [ln for ln in text.split("\n") if ln.strip()]  # JSON may hold raw U+2028
    if len(lines) < 2:
        return False
    # The sniff window may cut the last line; judge the complete ones.
    for ln in lines[:-1] if len(lines) > 2 else lines:
        try:
            json.loads(ln)
        except ValueError:
            return False
    return True


def _is_xml(text: str) -> bool:
    try:
        ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return False
    return True
