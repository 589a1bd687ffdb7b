from __future__ import annotations

import json

import pytest

from kinject.errors import BadRecord, UnsupportedSource
from kinject.ingest.json_parsers import flatten_json
from kinject.ingest.parsers import parse_documents
from kinject.ingest.sniff import sniff_kind
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


def test_csv_quote_never_closed_is_refused_naming_its_line() -> None:
    # Read leniently, the stray quote swallowed row 2 into row 1's cell and was indexed.
    data = b'id,name,office\n1,"Priya Nandakumar,Aarhus\n2,Tomas Vieira,Ghent\n'
    with pytest.raises(BadRecord, match="quoted field opened on line 2 is never closed") as info:
        parse_documents(Record("s", content=data), "csv")
    assert info.value.stage == "parse"
    # a quoted cell over two lines, and quotes inside cells, still read as before
    ok = b'id,note\n1,"two\nlines"\n2,say ""hi""\n3,"a ""b"" c"\n'
    assert [d.text for d in parse_documents(Record("o", content=ok), "csv")] == [
        "id: 1. note: two\nlines.", 'id: 2. note: say ""hi"".', 'id: 3. note: a "b" c.'
    ]


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


def test_json_object_holding_a_list_of_records_gives_one_document_per_record() -> None:
    # A catalogue as users write it: the products under a key, beside the catalogue's name.
    # Flattened whole, a chunk boundary fell inside the second product and its warehouse sat
    # beside the third product's name: "Which warehouse stocks the Ridgeback?" -> "Ghent".
    catalogue = {
        "catalogue": "Brightwater Outdoor Gear 2026",
        "products": [
            {"sku": "BW-TENT-220", "name": "Fjordline 2 Tent", "warehouse": "Aarhus"},
            {"sku": "BW-STOVE-09", "name": "Emberlite Stove", "warehouse": "Ghent"},
            {"sku": "BW-PACK-45", "name": "Ridgeback 45 Backpack", "warehouse": "Aarhus"},
        ],
    }
    docs = parse_documents(Record("c", content=json.dumps(catalogue).encode()), "json")
    assert [d.text for d in docs] == [
        "catalogue: Brightwater Outdoor Gear 2026",
        # each product keeps its catalogue's line: "What does Brightwater stock in Ghent?"
        "catalogue: Brightwater Outdoor Gear 2026\n"
        "sku: BW-TENT-220\nname: Fjordline 2 Tent\nwarehouse: Aarhus",
        "catalogue: Brightwater Outdoor Gear 2026\n"
        "sku: BW-STOVE-09\nname: Emberlite Stove\nwarehouse: Ghent",
        "catalogue: Brightwater Outdoor Gear 2026\n"
        "sku: BW-PACK-45\nname: Ridgeback 45 Backpack\nwarehouse: Aarhus",
    ]
    assert [d.title for d in docs[1:]] == ["Fjordline 2 Tent", "Emberlite Stove",
                                           "Ridgeback 45 Backpack"]
    assert len({d.doc_id for d in docs}) == 4
    # the same one level down, in Chinese; a single nested object stays whole
    nested = {"目录": {"名称": "青山户外", "产品": [{"名称": "云雀折叠伞", "价格": "128元"},
                                                  {"名称": "萤火营地灯", "价格": "86元"}]}}
    docs = parse_documents(
        Record("z", content=json.dumps(nested, ensure_ascii=False).encode()), "json")
    assert [d.text for d in docs] == ["目录.名称: 青山户外",
                                      "目录.名称: 青山户外\n名称: 云雀折叠伞\n价格: 128元",
                                      "目录.名称: 青山户外\n名称: 萤火营地灯\n价格: 86元"]


def test_jsonl_lines_and_bad_line_number() -> None:
    docs = parse_documents(Record("j", content=b'{"a": 1}\n\n{"a": 2}\n'), "jsonl")
    assert [d.text for d in docs] == ["a: 1", "a: 2"]
    with pytest.raises(BadRecord, match="line 2") as info:
        parse_documents(Record("j", content=b'{"a": 1}\n{oops\n'), "jsonl")
    assert info.value.stage == "parse"


def test_jsonl_with_a_raw_line_separator_inside_a_string_is_read_not_dead_lettered() -> None:
    # JSON allows raw U+2028 and U+0085 inside strings (a pasted web text); lines are "\n"
    data = '{"note": "ferry moved\u2028to pier 4"}\r\n{"note": "fares\u0085rise"}\n'.encode()
    assert "\u2028" in data.decode()  # raw, not an escape
    assert sniff_kind(data) == "jsonl"
    docs = parse_documents(Record("j", content=data), "jsonl")
    assert len(docs) == 2
    assert "pier 4" in docs[0].text and "rise" in docs[1].text


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


FERRY = "The ferry to Skerra leaves at nine and returns at four."


@pytest.mark.parametrize("data", [
    FERRY.encode("utf-16") + b"\n",  # a stray trailing byte (a tool appended a newline)
    FERRY.encode("utf-16")[:-1],  # cut short in the last code unit
    b"\xff\xfe" + FERRY[:10].encode("utf-16-le") + b"\x00\xd8" + FERRY[10:].encode("utf-16-le"),
    b"\xfe\xff" + FERRY.encode("utf-16-be"),
    FERRY.encode("utf-32"),  # its mark starts with UTF-16's
], ids=["trailing-byte", "truncated", "unpaired-surrogate", "big-endian", "utf-32"])
def test_text_behind_a_utf16_or_utf32_mark_is_read_as_such(data: bytes) -> None:
    record = Record("u", content=data)
    text = parse_documents(record, sniff_kind(data))[0].text
    assert text.startswith("The ferry") and "Skerra leaves" in text and "four" in text


def test_a_utf16_table_and_page_are_sniffed_as_what_they_are() -> None:
    table = "name,role\nIda Brook,warden\nTom Hale,ranger\n".encode("utf-16")
    page = f"<html><body><p>{FERRY}</p></body></html>".encode("utf-16")
    assert sniff_kind(table) == "csv" and sniff_kind(page) == "html"
    assert parse_documents(Record("t", content=table), "csv")[0].text == (
        "name: Ida Brook. role: warden.")


def test_bytes_after_a_utf16_mark_that_are_not_utf16_are_a_parse_error() -> None:
    with pytest.raises(BadRecord, match="UTF-16 byte-order mark, but 40 of its 40") as info:
        parse_documents(Record("b", content=b"\xff\xfe" + b"\x00\xdc" * 40), "text")
    assert info.value.stage == "parse"


def test_malformed_json_is_a_parse_error() -> None:
    with pytest.raises(BadRecord, match="json is malformed"):
        parse_documents(Record("b", content=b"{nope"), "json")


@pytest.mark.parametrize("kind", ["sql"])
def test_kinds_without_parser_are_unsupported(kind: str) -> None:
    with pytest.raises(UnsupportedSource, match=kind):
        parse_documents(Record("x", content=b"data"), kind)
