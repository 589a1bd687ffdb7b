from __future__ import annotations

import json
import re

import pytest

from kinject.demo_data import render_lighthouse_picture
from kinject.errors import BadRecord, DependencyMissing, UnsupportedSource
from kinject.ingest import ocr
from kinject.ingest.pipeline import IngestConfig, ingest_record, nothing_extracted
from kinject.types import Record


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"chunk_size": 8}, "chunk_size"),
        ({"chunk_overlap": 400}, "chunk_overlap"),
        ({"chunk_overlap": -1}, "chunk_overlap"),
        ({"ocr_engine": "paddle"}, "'paddle'"),
    ],
)
def test_config_names_bad_values(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        IngestConfig(**kwargs)  # type: ignore[arg-type]


def test_csv_record_without_kind_is_sniffed_and_chunked_per_row() -> None:
    rec = Record("t/lights", content=b"Lighthouse,Keeper\nGullspire,Senna\nFennick,Ruan\n")
    out = ingest_record(rec, IngestConfig())
    assert [c.text for c in out.chunks] == [
        "Lighthouse: Gullspire. Keeper: Senna.",
        "Lighthouse: Fennick. Keeper: Ruan.",
    ]
    assert {c.kind for c in out.chunks} == {"csv"} and out.images == []


def test_text_is_normalised_and_language_tagged() -> None:
    rec = Record("t/zh", content="灯屿群岛位于大陆以西。\r\n\r\n\r\n守塔人每天点灯。".encode())
    out = ingest_record(rec, IngestConfig())
    assert out.documents[0].text == "灯屿群岛位于大陆以西。\n\n守塔人每天点灯。"
    assert out.documents[0].lang == "zh" and out.chunks[0].lang == "zh"


def test_replay_gives_identical_chunks() -> None:
    rec = Record("t/j", kind="json", content=json.dumps({"a": {"b": "c" * 900}}).encode())
    first, again = ingest_record(rec, IngestConfig()), ingest_record(rec, IngestConfig())
    assert first.chunks == again.chunks and len(first.chunks) > 1


def test_deletes_are_refused() -> None:
    with pytest.raises(ValueError, match="delete"):
        ingest_record(Record("t/x", op="delete"), IngestConfig())


def test_unsupported_kind() -> None:
    with pytest.raises(UnsupportedSource):
        ingest_record(Record("t/s", kind="sql", content=b"SELECT 1"), IngestConfig())


def test_image_with_caption_and_ocr_off() -> None:
    rec = Record(
        "t/pic",
        kind="image",
        content=render_lighthouse_picture(),
        meta={"caption": "A banded lighthouse at sea."},
    )
    out = ingest_record(rec, IngestConfig(ocr_engine="none"))
    assert len(out.images) == 1 and out.images[0].caption == "A banded lighthouse at sea."
    assert [c.text for c in out.chunks] == ["A banded lighthouse at sea."]
    assert out.chunks[0].meta["image_id"] == out.images[0].image_id


@pytest.mark.parametrize(
    ("kind", "content", "what"),
    [("json", b"", "it is empty (0 bytes)"), ("csv", b" \n\n", "it is only whitespace"),
     ("text", b"", "it is empty (0 bytes)")],
)
def test_an_empty_record_is_refused_as_empty(kind: str, content: bytes, what: str) -> None:
    # an empty JSON file read "json is malformed: Expecting value: line 1 column 1 (char 0)"
    expected = re.escape(f"no text could be extracted from the record: {what}")
    with pytest.raises(BadRecord, match=expected):
        ingest_record(Record("t/empty", kind=kind, content=content))


def test_an_image_with_nothing_to_read_says_what_it_lacks() -> None:
    # a photo published with no caption and no text in it; the dead letter said only
    # "no text could be extracted from the record", which left a user guessing
    out = ingest_record(Record("t/photo", kind="image", content=render_lighthouse_picture()),
                        IngestConfig(ocr_engine="none"))
    assert out.images and not out.chunks
    why = nothing_extracted(out)
    assert "the image has no caption (meta.caption" in why and ".meta.json sidecar" in why
    assert "KINJECT_MODELS__CLIP_CHECKPOINT" in why


def test_image_without_engine_auto_keeps_caption_named_engine_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        ocr, "available_ocr_engines", lambda: {"rapidocr": False, "tesseract": False}
    )
    rec = Record("t/pic", kind="image", content=render_lighthouse_picture(), meta={"caption": "x"})
    assert [c.text for c in ingest_record(rec, IngestConfig(ocr_engine="auto")).chunks] == ["x"]
    with pytest.raises(DependencyMissing):
        ingest_record(rec, IngestConfig(ocr_engine="rapidocr"))


def test_cleaning_is_wired_into_ingest() -> None:
    rec = Record("t/notice", kind="text",
                 content=b"The ferry to Vask sails on May 1, 2023 and covers 12 mi. "
                         b"Questions: harbour@example.org")
    plain = ingest_record(rec, IngestConfig())
    text = " ".join(c.text for c in plain.chunks)
    assert "(2023-05-01)" in text and "(19.3 km)" in text  # beside the original
    assert "harbour@example.org" in text  # redaction is opt-in
    redacted = ingest_record(rec, IngestConfig(redact_pii=True))
    assert "[EMAIL]" in " ".join(c.text for c in redacted.chunks)
    assert redacted.documents[0].meta["pii_redacted"] == 1
    bare = ingest_record(rec, IngestConfig(enrich=False))
    assert "(2023-05-01)" not in " ".join(c.text for c in bare.chunks)


def test_boilerplate_is_dropped_and_counted() -> None:
    rec = Record("t/nav", kind="text", content=b"Home | About | Contact\n\nClick here. Read more.")
    result = ingest_record(rec, IngestConfig())
    assert result.chunks == [] and result.dropped >= 1
    kept = ingest_record(rec, IngestConfig(min_informativeness=0.0))
    assert kept.chunks and kept.dropped == 0
    with pytest.raises(ValueError, match="min_informativeness"):
        IngestConfig(min_informativeness=1.5)
