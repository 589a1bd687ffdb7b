from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinject.errors import BadRecord
from kinject.ingest.envelope import decode_record, encode_record, record_from_path
from kinject.ingest.uris import UriPolicy
from kinject.types import Record

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def _value(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_text_record_round_trips_as_readable_json() -> None:
    rec = Record("docs/a", kind="text", content="Hello 世界".encode(), meta={"lang": "x"}, ts=1.5)
    value = encode_record(rec)
    assert json.loads(value)["content"] == "Hello 世界"
    back = decode_record(value, b"docs/a", ("kinject.records", 0, 7))
    assert back == Record(
        "docs/a",
        kind="text",
        content=rec.content,
        meta={"lang": "x"},
        ts=1.5,
        position=("kinject.records", 0, 7),
    )


def test_binary_record_round_trips_as_base64() -> None:
    rec = Record("img/1", kind="image", content=PNG)
    env = json.loads(encode_record(rec))
    assert "content" not in env and env["content_b64"]
    assert decode_record(encode_record(rec), None, None).content == PNG


def test_undecodable_bytes_travel_as_base64_even_without_kind() -> None:
    rec = Record("blob", content=b"\xff\xfe\x00binary")
    assert "content_b64" in json.loads(encode_record(rec))
    assert decode_record(encode_record(rec), None, None).content == rec.content


def test_tombstone_deletes_the_key_source() -> None:
    rec = decode_record(None, b"docs/a", ("kinject.records", 1, 3))
    assert (rec.op, rec.source_id, rec.position) == ("delete", "docs/a", ("kinject.records", 1, 3))


def test_tombstone_without_key_is_bad() -> None:
    with pytest.raises(BadRecord, match="without a key"):
        decode_record(None, None, None)


def test_explicit_delete_needs_no_content() -> None:
    rec = decode_record(_value(op="delete", source_id="docs/a"), b"docs/a", None)
    assert rec.op == "delete" and rec.content == b""


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (_value(content="x"), "source_id"),
        (_value(source_id="", content="x"), "source_id"),
        (_value(source_id="a", content="x", uri="/tmp/x"), "exactly one of content"),
        (_value(source_id="a"), "found: none"),
        (_value(source_id="a", content="x", kind="docx"), "kind"),
        (_value(source_id="a", content="x", op="update"), "op"),
        (_value(source_id="a", contents="x"), "contents"),
        (_value(source_id="a", content_b64="!!not base64!!"), "content_b64"),
        (_value(source_id="a", content="x", meta=[1]), "meta"),
    ],
)
def test_invalid_envelopes_are_bad_records_naming_the_problem(value: bytes, needle: str) -> None:
    with pytest.raises(BadRecord, match=needle) as info:
        decode_record(value, None, None)
    assert info.value.stage == "validate"


@pytest.mark.parametrize("fields", [{"content": "Orrin \ud800 pier"},
                                    {"content": "x", "meta": {"title": ["ok", "\udc01"]}}])
def test_a_lone_surrogate_is_named_not_a_codec_error(fields: dict[str, object]) -> None:
    value = _value(source_id="s", **fields)
    assert b"\\ud" in value  # the JSON escape, as a client sends it
    with pytest.raises(BadRecord, match="holds a lone UTF-16 surrogate") as info:
        decode_record(value, None)
    assert info.value.stage == "validate" and "codec" not in str(info.value)


def test_uri_reads_a_local_file_and_sniffs_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    for uri in (str(path), path.as_uri()):
        rec = decode_record(_value(source_id="t", uri=uri), None, None,
                            uris=UriPolicy(dirs=(tmp_path,)))
        assert rec.content == b"a,b\n1,2\n"
        assert rec.kind == "csv"
        assert rec.meta["filename"] == "table.csv"


def test_missing_file_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(BadRecord, match="not found") as info:
        decode_record(_value(source_id="t", uri=str(tmp_path / "nope.txt")), None, None,
                      uris=UriPolicy(dirs=(tmp_path,)))
    assert info.value.stage == "fetch"


@pytest.mark.parametrize("uri", ["http://example.com/a.txt", "https://example.com/a.txt"])
def test_http_uri_is_refused_by_default(uri: str) -> None:
    with pytest.raises(BadRecord, match="is not allowed"):
        decode_record(_value(source_id="t", uri=uri), None, None)


def test_other_uri_schemes_are_refused() -> None:
    with pytest.raises(BadRecord, match="unsupported scheme"):
        decode_record(_value(source_id="t", uri="s3://bucket/key"), None, None)


def test_record_from_path_sniffs_and_merges_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(PNG)
    (tmp_path / "pic.png.meta.json").write_text(json.dumps({"caption": "a red boat", "x": 1}))
    rec = record_from_path(path, source_id="demo/pic", meta={"x": 2})
    assert rec.kind == "image" and rec.source_id == "demo/pic"
    assert rec.meta == {"filename": "pic.png", "caption": "a red boat", "x": 2}
    assert record_from_path(path).source_id == path.resolve().as_posix()
