from __future__ import annotations

import pytest

from kinject.ingest.sniff import sniff_kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image"),
        (b"\xff\xd8\xff\xe0..JFIF", "image"),
        (b"GIF89a....", "image"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image"),
        (b"%PDF-1.7\n...", "pdf"),
        (b'{"a": 1, "b": [1, 2]}', "json"),
        (b'  [{"a": 1}, {"a": 2}]', "json"),
        (b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', "jsonl"),
        (b'<?xml version="1.0"?><root><a>1</a></root>', "xml"),
        (b"<catalog><book id='1'/></catalog>", "xml"),
        (b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", "html"),
        (b"name,age,city\nAda,36,London\nLin,41,Beijing\n", "csv"),
        (b"name;age\nAda;36\nLin;41\n", "csv"),
        (b"name\tage\nAda\t36\nLin\t41\n", "tsv"),
        (b"# Title\n\nSome *markdown* text.\n", "markdown"),
        (b"Plain prose, with a comma.\nAnother line, with one too.\n", "text"),
        ("这是一段中文文本。它没有任何结构。".encode(), "text"),
        (b"\xff\xfe\xfd binary garbage \x00\x01", "text"),
        (b"", "text"),
    ],
)
def test_sniff_by_content(data: bytes, kind: str) -> None:
    assert sniff_kind(data) == kind


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("notes.md", "markdown"),
        ("a.TSV", "tsv"),
        ("rows.ndjson", "jsonl"),
        ("q.sql", "sql"),
        ("page.htm", "html"),
        ("scan.jpeg", "image"),
        ("x.txt", "text"),
    ],
)
def test_sniff_by_extension(filename: str, kind: str) -> None:
    assert sniff_kind(b"whatever is inside", filename) == kind


def test_magic_bytes_beat_the_file_name() -> None:
    assert sniff_kind(b"\x89PNG\r\n\x1a\n....", "notes.txt") == "image"


def test_unknown_extension_falls_back_to_content() -> None:
    assert sniff_kind(b'{"a": 1}', "data.bin") == "json"
