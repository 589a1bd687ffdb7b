"""Poison pills on a real broker: a record that takes too long is stopped, dead-lettered once
and committed, and the good records behind it flow; a long record that is within its budget
does not cost the worker its group membership (which used to hand it the same record again
and again)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from _held_records import HOLD_S, WAIT_FOR

from kinject.config import KafkaSettings
from kinject.demo_data import render_scanned_page
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_consumer, make_producer
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _scanned_pdf(pages: int) -> bytes:
    """An image-only PDF of ``pages`` scanned notices: each one needs OCR."""
    from PIL import Image

    images = [Image.open(io.BytesIO(render_scanned_page(
        ("HARBOUR NOTICE", f"Mooring {n} at Brinmoor is closed for repairs.",
         "Observer: Lowenna Tresize")))) for n in range(1, pages + 1)]
    buf = io.BytesIO()
    images[0].save(buf, "PDF", save_all=True, append_images=images[1:])
    return buf.getvalue()


def _publish(kafka: KafkaSettings, records: list[Record]) -> list[int]:
    """Send ``records`` in order to partition 0 of the records topic; their offsets."""
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    futures = [producer.send(Topics.from_settings(kafka).records, key=r.source_id.encode(),
                             value=encode_record(r), partition=0) for r in records]
    producer.flush()
    offsets = [f.get(timeout=10).offset for f in futures]
    producer.close()
    return offsets


def _good(n: int) -> list[Record]:
    return [Record(f"good/{i}", kind="text",
                   content=f"Buoy {i} marks the reef north of Tarn island.".encode())
            for i in range(n)]


def _read_all(kafka: KafkaSettings, topic: str, settle_s: float = 2.0,
              first_s: float = 30.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` as JSON (read until nothing new came for ``settle_s``; the
    first message may take up to ``first_s``: a new consumer's metadata and offsets took
    over 2 s on busy cores, and the topic then read as empty)."""
    consumer = make_consumer(kafka, kafka.bootstrap_servers or "", None, [topic])
    got: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < (settle_s if got else first_s):
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(json.loads(m.value) for m in batch)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return got


def _work(worker: IngestWorker, until: int, timeout_s: float = 120.0, extra_polls: int = 0) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.processed < until:
        assert time.monotonic() < deadline, f"{worker.processed} of {until} processed"
        worker.poll_once(200)
    for _ in range(extra_polls):  # nothing may come back
        worker.poll_once(500)


def test_a_record_over_its_time_budget_is_dead_lettered_once_and_the_rest_flow(
    kafka: KafkaSettings, hash_embedder: Any, held_records: None, tmp_path: Path
) -> None:
    pytest.importorskip("rapidocr")  # the fresh child after the kill loads it, off the budget
    # held until the child is killed: over its budget on any machine
    slow = Record("slow/scans", kind="pdf", content=_scanned_pdf(2),
                  meta={WAIT_FOR: str(tmp_path / "never")})
    offsets = _publish(kafka, [slow, *_good(5)])
    topics = Topics.from_settings(kafka)
    bootstrap = kafka.bootstrap_servers or ""
    worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="rapidocr"), hash_embedder,
                          record_timeout_s=3.0)
    worker.start()
    try:
        _work(worker, until=6, extra_polls=4)
    finally:
        worker.close()
    assert worker.dead_letters == 1 and worker.reconnects == 0
    assert worker.child is not None and worker.child.killed == 1

    # A restarted worker of the same group finds everything committed: no second pass.
    again = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), hash_embedder,
                         record_timeout_s=1.0)
    again.start()
    try:
        deadline = time.monotonic() + 15
        while not again.ready.is_set() and time.monotonic() < deadline:
            again.poll_once(200)
        for _ in range(5):
            again.poll_once(300)
    finally:
        again.close()
    assert again.ready.is_set() and again.processed == 0 and again.dead_letters == 0

    letters = _read_all(kafka, topics.dlq)
    assert len(letters) == 1, letters
    assert letters[0]["offset"] == offsets[0] and letters[0]["stage"] == "ingest"
    assert letters[0]["error_type"] == "RecordTimeout"
    assert "longer than its time budget of 3 s" in letters[0]["reason"]
    events = _read_all(kafka, topics.chunks)
    assert sorted(e["source_id"] for e in events) == [f"good/{i}" for i in range(5)]


def test_a_long_record_within_its_budget_keeps_the_worker_in_its_group(
    kafka: KafkaSettings, hash_embedder: Any, held_records: None
) -> None:
    """The record takes longer than max_poll_interval (3 s here; held 7 s, then two pages
    of OCR): without polling while it is read, the member is evicted, its commit fails,
    and the same record is read again."""
    pytest.importorskip("rapidocr")
    kafka = kafka.model_copy(update={"max_poll_interval_ms": 3000})
    slow = Record("slow/scans", kind="pdf", content=_scanned_pdf(2), meta={HOLD_S: 7.0})
    _publish(kafka, [slow, *_good(3)])
    worker = IngestWorker(kafka, kafka.bootstrap_servers or "", IngestConfig(ocr_engine="rapidocr"),
                          hash_embedder, record_timeout_s=300.0)
    worker.start()
    started = time.monotonic()
    try:
        _work(worker, until=4, timeout_s=240, extra_polls=4)
    finally:
        worker.close()
    took = time.monotonic() - started
    assert worker.reconnects == 0 and worker.dead_letters == 0, took
    events = _read_all(kafka, Topics.from_settings(kafka).chunks)
    by_source: dict[str, int] = {}
    for event in events:
        by_source[event["source_id"]] = by_source.get(event["source_id"], 0) + 1
    assert by_source == {"slow/scans": 1, "good/0": 1, "good/1": 1, "good/2": 1}, took
    slow_text = next(" ".join(c["text"] for c in e["chunks"]) for e in events
                     if e["source_id"] == "slow/scans")
    assert "Mooring 2 at Brinmoor" in slow_text


def test_a_record_whose_chunk_event_is_too_large_to_send_is_dead_lettered(
    kafka: KafkaSettings
) -> None:
    """A record within the size limit can make a chunk event several times its size (every
    400 characters carry a vector and their metadata). The producer refused that event, the
    worker took the refusal for a lost broker, reconnected and read the same batch again,
    forever: the partition stopped. The record goes to the dead-letter topic instead."""
    from kinject.index.embedders import HashEmbedder

    wide = HashEmbedder(dim=4096)  # 5.5 kB of base64 per chunk: a 4 kB record makes ~200 kB
    wide.warm_up()
    big = Record("big/text", kind="text", content=" ".join(
        f"Buoy {i} marks the reef north of Tarn island." for i in range(80)).encode())
    offsets = _publish(kafka, [big, *_good(3)])
    worker = IngestWorker(kafka, kafka.bootstrap_servers or "", IngestConfig(ocr_engine="none"),
                          wide, max_record_bytes=4096, record_timeout_s=0)
    worker.start()
    try:
        _work(worker, until=4, timeout_s=60, extra_polls=2)
    finally:
        worker.close()
    topics = Topics.from_settings(kafka)
    letters = _read_all(kafka, topics.dlq)
    assert len(letters) == 1 and letters[0]["offset"] == offsets[0], letters
    assert letters[0]["stage"] == "publish" and "too large" in letters[0]["reason"]
    events = _read_all(kafka, topics.chunks)
    assert sorted(e["source_id"] for e in events) == [f"good/{i}" for i in range(3)]


def test_a_dead_letter_too_large_for_the_broker_is_sent_without_the_records_bytes(
    kafka: KafkaSettings, hash_embedder: Any, tmp_path: Path
) -> None:
    """A dead letter carries the record's bytes in base64 (a third larger, plus JSON): for a
    record near a broker's message limit (real Kafka's default is 1 MB) the letter itself was
    refused for its size, the worker took that for a lost broker and read the same batch
    again, forever. The letter goes without the bytes (the dead-letter store keeps them) and
    the records behind it flow. The broker's limit is played here by the producer's own
    ``max_request_size`` (the embedded broker takes any size)."""
    from kinject.stream.dlq_store import DeadLetterStore

    bad = b"\xff" * 20_000  # not UTF-8 JSON: dead-lettered at once, with its 20 kB kept
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    topics = Topics.from_settings(kafka)
    sent = producer.send(topics.records, key=b"bad/bytes", value=bad, partition=0)
    producer.flush()
    bad_offset = sent.get(timeout=10).offset
    producer.close()
    _publish(kafka, _good(3))
    bootstrap = kafka.bootstrap_servers or ""
    with DeadLetterStore(tmp_path / "dlq.sqlite3") as store:
        worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), hash_embedder,
                              record_timeout_s=0, dlq_store=store)
        worker.start()
        worker._producer.close()  # as a broker with a 16 kB message limit would refuse
        worker._producer = make_producer(kafka, bootstrap, max_request_size=16_384)
        try:
            _work(worker, until=4, timeout_s=60, extra_polls=2)
        finally:
            worker.close()
        kept = store.latest()
        assert len(kept) == 1 and kept[0].value == bad  # the bytes are kept here
    letters = _read_all(kafka, topics.dlq)
    assert len(letters) == 1 and letters[0]["offset"] == bad_offset, letters
    assert letters[0]["value_b64"] is None and letters[0]["stage"] == "validate"
    assert "not valid UTF-8 JSON" in letters[0]["reason"]
    assert "too large" in letters[0]["reason"]
    events = _read_all(kafka, topics.chunks)
    assert sorted(e["source_id"] for e in events) == [f"good/{i}" for i in range(3)]
