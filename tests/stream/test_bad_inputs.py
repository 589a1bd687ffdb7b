"""Bad input of every kind becomes a dead letter with its reason; the good records around it
all arrive. One worker, one stream, real broker: what an operator sees in ``kinject.dlq``."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _messages import read_json

from kinject.config import KafkaSettings
from kinject.errors import BadRecord
from kinject.index.embedders import HashEmbedder
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_producer
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.producer import Producer
from kinject.stream.topics import ensure_topics
from kinject.types import Record

pytestmark = pytest.mark.kafka

# The worker's size limit in this test: small, so an "oversized" record costs nothing.
LIMIT = 64 * 1024


def _env(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _png() -> bytes:
    """A real, valid PNG with nothing written on it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buf, "PNG")
    return buf.getvalue()


def _huge_png() -> bytes:
    """A valid 12000x12000 PNG of 41 KB: 144 megapixels, refused before it is decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000), 1).save(buf, "PNG")
    return buf.getvalue()


def _text_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.drawString(72, 760, "The harbour master of Quillon logs every ship at dawn.")
    c.showPage()
    c.save()
    return buf.getvalue()


def _pdf_without_pages() -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 3\n0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    return out + b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


XML_BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<lolz>&lol3;</lolz>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<r><note>&xxe;</note></r>"
)


@dataclass(frozen=True)
class Bad:
    """A bad message: its key and value on the records topic, and what the dead letter says."""

    name: str
    value: bytes | None
    stage: str
    reason: str
    key: bytes | None = None  # None: the case's name as source id

    def message_key(self) -> bytes:
        return f"bad/{self.name}".encode() if self.key is None else self.key


def _bad_cases(tmp: Path) -> list[Bad]:
    sid = "bad/x"
    deep = b"[" * 10_000 + b"]" * 10_000
    deep_obj = '{"a":' * 5_000 + '"x"' + "}" * 5_000
    oversized = _env(source_id="bad/oversized", kind="text", content="tide tables " * 9000)
    assert len(oversized) > LIMIT
    cases = [
        # -- the envelope --------------------------------------------------------------
        Bad("invalid-json", b"{not json", "validate", "not valid UTF-8 JSON"),
        Bad("json-not-object", b'["a", "b"]', "validate", "must be a JSON object, got list"),
        Bad("json-null-value", b"null", "validate", "must be a JSON object, got NoneType"),
        Bad(
            "missing-source-id",
            _env(content="Kelp grows fast."),
            "validate",
            "source_id: Field required",
        ),
        Bad(
            "blank-source-id",
            _env(source_id="  ", content="Kelp grows fast."),
            "validate",
            "source_id: must not be blank",
        ),
        Bad(
            "source-id-not-string",
            _env(source_id=42, content="Kelp."),
            "validate",
            "source_id: Input should be a valid string",
        ),
        Bad(
            "lone-surrogate",  # json.dumps writes it as the escape "\ud800"
            _env(source_id=sid, kind="text", content="Tide tables \ud800 for Orrin."),
            "validate",
            "content: holds a lone UTF-16 surrogate (\\ud800) at character 12",
        ),
        Bad("unknown-op", _env(op="merge", source_id=sid, content="x"), "validate", "op:"),
        Bad(
            "content-and-uri",
            _env(source_id=sid, content="x", uri="/etc/hostname"),
            "validate",
            "exactly one of content, content_b64, uri (found: content, uri)",
        ),
        Bad("no-payload", _env(source_id=sid, kind="text"), "validate", "(found: none)"),
        Bad(
            "content-b64-not-base64",
            _env(source_id=sid, content_b64="***not base64***"),
            "validate",
            "content_b64: not valid base64",
        ),
        Bad(
            "unknown-field",
            _env(source_id=sid, content="x", contnet="typo"),
            "validate",
            "contnet: Extra inputs are not permitted",
        ),
        Bad(
            "unknown-kind",
            _env(source_id=sid, kind="spreadsheet", content="a"),
            "validate",
            "unknown kind 'spreadsheet'",
        ),
        Bad(
            "meta-not-object",
            _env(source_id=sid, content="x", meta="tag"),
            "validate",
            "meta: Input should be a valid dictionary",
        ),
        Bad(
            "ts-not-number",
            _env(source_id=sid, content="x", ts="yesterday"),
            "validate",
            "ts: Input should be a valid number",
        ),
        Bad("deeply-nested-envelope", deep, "validate", "nested too deeply"),
        Bad(
            "deeply-nested-meta",
            (
                '{"source_id":"bad/m","content":"Kelp grows fast.","meta":'
                + '{"a":' * 200
                + "1"
                + "}" * 200
                + "}"
            ).encode(),
            "validate",
            "meta: is nested deeper than 32 levels",
        ),
        Bad("delete-without-source-id", _env(op="delete"), "validate", "source_id: Field required"),
        Bad(
            "tombstone-without-key",
            None,
            "validate",
            "tombstone (null value) without a key",
            key=b"",
        ),  # kafka-python sends no message without key and value both
        Bad(
            "tombstone-key-not-utf8",
            None,
            "validate",
            "tombstone key is not UTF-8",
            key=b"\xff\xfe\xfa",
        ),
        Bad("oversized", oversized, "validate", f"over the limit of {LIMIT:,} bytes"),
        # -- where the payload lives -----------------------------------------------------
        # A record names no local file or URL for the worker to read unless a setting allows
        # it (this worker allows none; tests/stream/test_uri_policy.py allows a directory).
        Bad(
            "uri-missing-file",
            _env(source_id=sid, uri=str(tmp / "nope.txt")),
            "validate",
            "uri: reading local files named by a record is off",
        ),
        Bad("uri-etc-passwd", _env(source_id=sid, uri="/etc/passwd"), "validate",
            "uri: reading local files named by a record is off"),
        Bad(
            "uri-http",
            _env(source_id=sid, uri="https://example.com/a.txt"),
            "validate",
            "fetching https://example.com/a.txt is not allowed",
        ),
        Bad(
            "uri-ftp",
            _env(source_id=sid, uri="ftp://example.com/a.txt"),
            "validate",
            "unsupported scheme 'ftp'",
        ),
        Bad(
            "uri-file-other-host",
            _env(source_id=sid, uri="file://fileserver/a.txt"),
            "validate",
            "file uri on another host is refused",
        ),
        # -- the payload ------------------------------------------------------------------
        Bad(
            "zero-byte-content",
            _env(source_id=sid, kind="text", content=""),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "binary-junk-as-text",
            _env(source_id=sid, kind="text", content_b64=_b64(bytes(range(256)) * 4)),
            "parse",
            "content is not UTF-8",
        ),
        Bad(
            "nul-bytes-as-text",
            _env(source_id=sid, kind="text", content_b64=_b64(b"abc\x00\x00\x01def" * 10)),
            "parse",
            "contains NUL characters",
        ),
        Bad(
            "invalid-utf8-text",
            _env(source_id=sid, kind="text", content_b64=_b64(b"Caf\xe9 au lait at the pier")),
            "parse",
            "bad byte at offset 3",
        ),
        Bad(
            "corrupt-png",
            _env(source_id=sid, kind="image", content_b64=_b64(_png()[:40] + b"\x00" * 40)),
            "ocr",
            "cannot decode image",
        ),
        Bad(
            "png-labelled-image-but-text",
            _env(source_id=sid, kind="image", content="just words"),
            "ocr",
            "cannot decode image",
        ),
        Bad(
            "png-over-the-pixel-cap",
            _env(source_id=sid, kind="image", content_b64=_b64(_huge_png()),
                 meta={"caption": "A chart of the harbour."}),
            "parse",
            "12,000x12,000 = 144,000,000 pixels is over the cap of 40,000,000 pixels",
        ),
        Bad(
            "image-without-text-or-caption",
            _env(source_id=sid, kind="image", content_b64=_b64(_png())),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "pdf-without-pages",
            _env(source_id=sid, kind="pdf", content_b64=_b64(_pdf_without_pages())),
            "parse",
            "pdf has no pages",
        ),
        Bad(
            "truncated-pdf",
            _env(source_id=sid, kind="pdf", content_b64=_b64(_text_pdf()[:300])),
            "parse",
            "pdf is corrupt or unreadable",
        ),
        Bad(
            "zero-byte-pdf",
            _env(source_id=sid, kind="pdf", content_b64=""),
            "parse",
            "it is empty (0 bytes)",
        ),
        Bad(
            "json-content-malformed",
            _env(source_id=sid, kind="json", content='{"a": 1,'),
            "parse",
            "json is malformed",
        ),
        Bad(
            "json-content-deeply-nested",
            _env(source_id=sid, kind="json", content=deep_obj),
            "parse",
            "json is nested too deeply",
        ),
        Bad(
            "json-null",
            _env(source_id=sid, kind="json", content="null"),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "json-empty-list",
            _env(source_id=sid, kind="json", content="[]"),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "json-number",
            _env(source_id=sid, kind="json", content="42"),
            "clean",
            "informativeness threshold",
        ),
        Bad(
            "jsonl-bad-line",
            _env(
                source_id=sid,
                kind="jsonl",
                content='{"name": "Orla", "role": "keeper"}\n{"name": broken\n',
            ),
            "parse",
            "jsonl line 2 is malformed",
        ),
        Bad(
            "xml-bomb",
            _env(source_id=sid, kind="xml", content=XML_BOMB),
            "parse",
            "entity declarations are refused",
        ),
        Bad(
            "xml-external-entity",
            _env(source_id=sid, kind="xml", content=XXE),
            "parse",
            "external entity 'xxe'",
        ),
        Bad(
            "xml-malformed",
            _env(source_id=sid, kind="xml", content="<a><b></a>"),
            "parse",
            "xml is malformed",
        ),
        Bad(
            "csv-empty",
            _env(source_id=sid, kind="csv", content=""),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "csv-header-only",
            _env(source_id=sid, kind="csv", content="name,role\n"),
            "parse",
            "no text could be extracted",
        ),
        Bad(
            "html-without-text",
            _env(
                source_id=sid,
                kind="html",
                content="<html><head><script>var a=1;</script></head><body><nav>Home</nav>"
                "<footer>(c) 2024</footer></body></html>",
            ),
            "parse",
            "html has no visible text",
        ),
        Bad(
            "boilerplate-only",
            _env(source_id=sid, kind="text", content="Home | About | Contact | Login | Share"),
            "clean",
            "informativeness threshold (boilerplate?)",
        ),
    ]
    # each case under its own source id, the message key
    return [
        dataclasses.replace(c, value=c.value.replace(b'"bad/x"', b'"' + c.message_key() + b'"'))
        if c.value is not None
        else c
        for c in cases
    ]


def _good_records() -> list[tuple[Record, str]]:
    """Good records, and a phrase their chunks must hold."""
    utf16 = "The ferry to Skerra leaves at nine and returns at four.".encode("utf-16")
    ragged = b"name,role,since\nIda Brook,warden,1999\nTom Hale,ranger\nMae Lund,cook,2003,extra\n"
    recs = [
        (
            Record(
                source_id=f"good/{i}",
                kind="text",
                content=f"Buoy {i} marks the reef north of Tarn island.".encode(),
            ),
            f"Buoy {i} marks the reef",
        )
        for i in range(10)
    ]
    recs += [
        # UTF-16 with its BOM is text, not junk.
        (Record(source_id="good/utf16", kind="text", content=utf16), "ferry to Skerra"),
        # Ragged CSV: readable rows are ingested; extra cells are labelled "column N",
        # short rows keep the cells they have (the documented behaviour of parse_table).
        (Record(source_id="good/ragged-csv", kind="csv", content=ragged), "column 4: extra"),
        (Record(source_id="good/pdf", kind="pdf", content=_text_pdf()), "harbour master"),
        (
            Record(
                source_id="good/json",
                kind="json",
                content=b'{"name": "Gullspire", "keeper": {"name": "Senna Calloway"}}',
            ),
            "keeper.name: Senna Calloway",
        ),
        # 5,000 nested <div>s (55 KB): the recursion limit and a quadratic boilerplate
        # stripper once made a dead letter of it, or never finished; it is read, text kept.
        (
            Record(
                source_id="good/deep-html",
                kind="html",
                content=b"<html><body>" + b"<div>" * 5000
                + b"<p>The lamp of Gullspire is lit at dusk.</p>" + b"</div>" * 5000
                + b"</body></html>",
            ),
            "lamp of Gullspire is lit at dusk",
        ),
    ]
    return recs


def test_every_bad_input_is_a_dead_letter_and_the_good_ones_all_arrive(
    kafka_bootstrap: str, hash_embedder: HashEmbedder, tmp_path: Path
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"bad{uuid.uuid4().hex[:8]}",
        partitions=2,
        session_timeout_ms=2000,
    )
    topics = ensure_topics(settings, kafka_bootstrap)
    bad = _bad_cases(tmp_path)
    good = _good_records()
    assert len(bad) >= 30 and len({b.name for b in bad}) == len(bad)

    # kinject's own producer refuses an oversized record before it reaches Kafka.
    with Producer(settings, kafka_bootstrap, max_record_bytes=LIMIT) as kinject_producer:
        with pytest.raises(BadRecord, match="over the limit") as info:
            kinject_producer.publish(
                Record(source_id="bad/big", kind="text", content=b"tide tables " * 9000)
            )
        assert info.value.stage == "publish"

    # Any other client can still put anything on the topic: bad and good interleaved.
    raw = make_producer(settings, kafka_bootstrap, max_request_size=4 * LIMIT)
    from kinject.ingest.envelope import encode_record

    good_iter = iter(good)
    for n, case in enumerate(bad):
        raw.send(topics.records, key=case.message_key(), value=case.value)
        if n % 3 == 0 and (item := next(good_iter, None)) is not None:
            rec = item[0]
            raw.send(topics.records, key=rec.source_id.encode(), value=encode_record(rec))
    for rec, _ in good_iter:
        raw.send(topics.records, key=rec.source_id.encode(), value=encode_record(rec))
    raw.flush()
    raw.close()

    worker = IngestWorker(
        settings,
        kafka_bootstrap,
        IngestConfig(ocr_engine="none"),
        hash_embedder,
        group_id=f"{settings.topic_prefix}-ingest",
        max_record_bytes=LIMIT,
    )
    worker.start()
    total = len(bad) + len(good)
    deadline = time.monotonic() + 60
    try:
        while worker.processed < total:
            assert time.monotonic() < deadline, f"{worker.processed} of {total} processed"
            worker.poll_once(200)
    finally:
        worker.close()
    assert worker.processed == total  # the worker survived every one of them
    assert worker.dead_letters == len(bad)

    letters = read_json(settings, kafka_bootstrap, topics.dlq, len(bad))
    by_value: dict[tuple[bytes | None, bytes | None], dict[str, Any]] = {}
    for letter in letters:
        key = base64.b64decode(letter["key_b64"]) if letter["key_b64"] is not None else None
        value = base64.b64decode(letter["value_b64"]) if letter["value_b64"] is not None else None
        by_value[(key, value)] = letter  # the original bytes are kept: they identify it
    assert len(letters) == len(bad)
    problems = []
    for case in bad:
        letter = by_value.get((case.message_key(), case.value))
        if letter is None:
            problems.append(f"{case.name}: no dead letter holding its original bytes")
        elif letter["stage"] != case.stage or case.reason not in letter["reason"]:
            problems.append(
                f"{case.name}: got ({letter['stage']}) {letter['reason']!r}, "
                f"expected ({case.stage}) ...{case.reason!r}..."
            )
        elif letter["topic"] != topics.records or letter["offset"] is None:
            problems.append(f"{case.name}: no source position in {letter}")
    assert not problems, "\n".join(problems)

    events = read_json(settings, kafka_bootstrap, topics.chunks, len(good))
    texts: dict[str, str] = {}
    for event in events:
        assert event["op"] == "upsert" and event["chunks"], event["source_id"]
        texts[event["source_id"]] = " ".join(c["text"] for c in event["chunks"])
    assert sorted(texts) == sorted(r.source_id for r, _ in good)  # none lost, no bad one in
    for rec, phrase in good:
        assert phrase in texts[rec.source_id], (rec.source_id, texts[rec.source_id])
