from __future__ import annotations

import json

import pytest

from kinject.errors import BadRecord, UnsupportedSource
from kinject.ingest.parsers import flatten_json, parse_documents
from kinject.types import Record


def test_csv_row_reads_with_header_labels() -> None:
    data = b"Lighthouse,Keeper,First lit\nGullspire,Senna Calloway,1902\nFennick Light,,1859\n"
    docs = parse_documents(Record("t", content=data, meta={"filename": "l.csv"}), "csv")
    assert [d.text for d in docs] == [
        "Lighthouse: Gullspire. Keeper: Senna Calloway. First lit: 1902.",
        "Lighthouse: Fennick Light. First lit: 1859.",
    ]
    assert docs[0].meta["row"] == {
        "Lighthouse": "Gullspire",
        "Keeper": "Senna Calloway",
        "First lit": "1902",
    }
    assert docs[0].doc_id != docs[1].doc_id
    assert docs[0].title == "l.csv: Gullspire"


def test_tsv_and_semicolon_tables() -> None:
    tsv = parse_documents(Record("t", content=b"a\tb\n1\t2\n"), "tsv")
    semi = parse_documents(Record("s", content=b"a;b\n1;2\n"), "csv")
    assert tsv[0].text == semi[0].text == "a: 1. b: 2."


def test_nested_json_is_flattened_into_field_paths() -> None:
    value = {
        "name": "Guild",
        "hq": {"building": "Wick House", "address": {"island": "Tessaly"}},
        "tags": ["old", "secret"],
        "officers": [{"role": "Warden", "name": "Hollis"}],
        "motto": None,
        "active": True,
    }
    docs = parse_documents(Record("g", content=json.dumps(value).encode()), "json")
    assert len(docs) == 1
    assert docs[0].text.splitlines() == [
        "name: Guild",
        "hq.building: Wick House",
        "hq.address.island: Tessaly",
        "tags: old, secret",
        "officers[0].role: Warden",
        "officers[0].name: Hollis",
        "active: yes",
    ]
    assert docs[0].title == "Guild"


def test_json_list_gives_one_document_per_element() -> None:
    data = json.dumps([{"route": "A to B"}, {"route": "B to C"}, {}]).encode()
    docs = parse_documents(Record("f", content=data), "json")
    assert [d.text for d in docs] == ["route: A to B", "route: B to C"]
    assert [d.meta["item_index"] for d in docs] == [0, 1]


def test_jsonl_lines_and_bad_line_number() -> None:
    docs = parse_documents(Record("j", content=b'{"a": 1}\n\n{"a": 2}\n'), "jsonl")
    assert [d.text for d in docs] == ["a: 1", "a: 2"]
    with pytest.raises(BadRecord, match="line 2") as info:
        parse_documents(Record("j", content=b'{"a": 1}\n{oops\n'), "jsonl")
    assert info.value.stage == "parse"


def test_flatten_scalars_and_lists() -> None:
    assert flatten_json("just text") == ["just text"]
    assert flatten_json([1, 2, 3]) == ["1, 2, 3"]
    assert flatten_json({"a": []}) == []


def test_markdown_title_from_heading() -> None:
    docs = parse_documents(Record("m", content=b"# The Isles\n\nText."), "markdown")
    assert docs[0].title == "The Isles"


def test_undecodable_text_is_a_parse_error() -> None:
    with pytest.raises(BadRecord, match="not UTF-8") as info:
        parse_documents(Record("b", content=b"ok \x80\x81 abc"), "text")
    assert info.value.stage == "parse"


def test_malformed_json_is_a_parse_error() -> None:
    with pytest.raises(BadRecord, match="json is malformed"):
        parse_documents(Record("b", content=b"{nope"), "json")


@pytest.mark.parametrize("kind", ["sql"])
def test_kinds_without_parser_are_unsupported(kind: str) -> None:
    with pytest.raises(UnsupportedSource, match=kind):
        parse_documents(Record("x", content=b"data"), kind)
