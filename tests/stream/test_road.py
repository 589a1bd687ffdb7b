"""The road from kinject.records to the index, through the real embedded broker."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _running import Running
from _wait import until
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_consumer, make_producer
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = pytest.mark.kafka


@pytest.fixture()
def road(kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path,
         hash_embedder: HashEmbedder) -> Iterator[dict[str, Any]]:
    index = TextIndex(tmp_path / "index", hash_embedder).open()
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index)
    loops = Running(worker.run, mat.run)
    until(worker.ready.is_set)
    producer = make_producer(kafka, kafka_bootstrap)
    yield {"index": index, "worker": worker, "mat": mat, "producer": producer,
           "topics": Topics.from_settings(kafka), "loops": loops}
    loops.stop()
    producer.close()
    index.close()


def _publish(road: dict[str, Any], *records: Record | tuple[bytes, bytes | None]) -> None:
    for r in records:
        if isinstance(r, Record):
            road["producer"].send(road["topics"].records, key=r.source_id.encode(),
                                  value=encode_record(r))
        else:
            road["producer"].send(road["topics"].records, key=r[0], value=r[1])
    road["producer"].flush()


def _sources(index: TextIndex, query: str) -> set[str]:
    return {h.source_id for h in index.search(query, 10)}


def test_published_records_become_searchable_with_lineage(road: dict[str, Any]) -> None:
    index = road["index"]
    _publish(road,
             Record(source_id="kb/otters", kind="text",
                    content=b"The river otter colony at Fenwick counts 41 animals."),
             Record(source_id="kb/staff", kind="csv",
                    content=b"name,role\nIda Brook,warden\nTom Hale,ranger\n"))
    until(lambda: {"kb/otters", "kb/staff"} <= _sources(index, "otter colony warden ranger"))
    assert index.search("otter colony Fenwick", 1)[0].source_id == "kb/otters"
    lineage = index.docstore.lineage("kb/otters")  # type: ignore[union-attr]
    assert lineage[0]["topic"] == road["topics"].records
    assert lineage[0]["offset"] >= 0 and lineage[0]["chunk_ids"]


def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_still_arrive(
    road: dict[str, Any], kafka: KafkaSettings, kafka_bootstrap: str
) -> None:
    good = Record(source_id="kb/good", kind="text", content=b"Lantern oil is stored in shed 4.")
    nav = Record(source_id="kb/nav", kind="text", content=b"Home | About | Contact")
    _publish(road, (b"kb/broken", b"{not json"),
             (b"kb/nosource", json.dumps({"op": "upsert", "content": "x"}).encode()), nav, good)
    until(lambda: "kb/good" in _sources(road["index"], "lantern oil shed"))
    dlq = make_consumer(kafka, kafka_bootstrap, None, [road["topics"].dlq],
                        consumer_timeout_ms=5000)
    letters = [json.loads(m.value) for m in dlq]
    dlq.close()
    assert len(letters) == 3
    assert sorted(letter["stage"] for letter in letters) == ["clean", "validate", "validate"]
    import base64

    originals = {base64.b64decode(letter["value_b64"]) for letter in letters}
    assert b"{not json" in originals  # the original bytes are kept for replay
    assert all(letter["reason"] for letter in letters)


def test_update_and_delete_travel_the_same_road(road: dict[str, Any]) -> None:
    index = road["index"]
    _publish(road, Record(source_id="kb/fee", kind="text", content=b"The ferry fee is 9 marks."))
    until(lambda: "kb/fee" in _sources(index, "ferry fee"))
    _publish(road, Record(source_id="kb/fee", kind="text",
                          content=b"The ferry fee is 12 marks."))
    until(lambda: "12 marks" in index.search("ferry fee", 1)[0].text)
    assert len(index) == 1  # replaced, not added
    _publish(road, Record(source_id="kb/fee", op="delete"))
    until(lambda: len(index) == 0)
    _publish(road, Record(source_id="kb/tomb", kind="text", content=b"Tombstones delete too."))
    until(lambda: "kb/tomb" in _sources(index, "tombstones"))
    _publish(road, (b"kb/tomb", None))  # a Kafka tombstone
    until(lambda: len(index) == 0)


def test_a_restarted_replica_resumes_without_duplicates(
    road: dict[str, Any], kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path,
    hash_embedder: HashEmbedder
) -> None:
    index = road["index"]
    _publish(road, *[Record(source_id=f"kb/{i}", kind="text",
                            content=f"Fact number {i} about island {i}.".encode())
                     for i in range(5)])
    until(lambda: len(index) == 5)
    road["loops"].stop()
    index.close()
    # The replica comes back: it loads its snapshot and seeks to the offsets it stored,
    # so nothing is applied twice and the index is complete at once.
    reopened = TextIndex(tmp_path / "index", hash_embedder).open()
    mat = IndexMaterialiser(kafka, kafka_bootstrap, reopened)
    mat.start()
    assert len(reopened) == 5
    assert mat.poll_once(500) == 0
    mat.close()
    reopened.close()


@pytest.mark.slow
def test_a_replica_keeps_up_after_the_embedded_broker_restarts(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    """The embedded broker keeps its log in memory. After a restart the stored offsets point
    into a log that no longer exists; the replica must notice and read the new log."""
    from kinject.stream.broker import EmbeddedBroker

    settings = KafkaSettings(partitions=1, session_timeout_ms=2000)
    topics = Topics.from_settings(settings)

    def run_once(source_id: str, text: str) -> int:
        with EmbeddedBroker(settings, port=0) as broker:
            bootstrap = broker.bootstrap_servers
            index = TextIndex(tmp_path / "index", hash_embedder).open()
            worker = IngestWorker(settings, bootstrap, IngestConfig(ocr_engine="none"),
                                  hash_embedder)
            mat = IndexMaterialiser(settings, bootstrap, index)
            worker.start()
            mat.start()
            producer = make_producer(settings, bootstrap)
            # several records in one batch: offsets beyond one per batch
            for i in range(3):
                rec = Record(source_id=f"{source_id}-{i}", kind="text",
                             content=f"{text} number {i}".encode())
                producer.send(topics.records, key=rec.source_id.encode(),
                              value=encode_record(rec))
            producer.flush()
            producer.close()
            deadline = time.monotonic() + 30
            while not all(index.docstore.lineage(f"{source_id}-{i}")  # type: ignore[union-attr]
                          for i in range(3)):
                assert time.monotonic() < deadline, f"{source_id} never reached the index"
                worker.poll_once(100)
                mat.poll_once(50)
            worker.close()
            mat.close()
            n = len(index)
            index.close()
            return n

    assert run_once("kb/before", "Before the restart the lamp was green") == 3
    assert run_once("kb/after", "After the restart the lamp turned blue") == 6


@pytest.mark.slow
def test_text_is_not_held_back_by_ocr_in_the_same_batch(
    kafka_bootstrap: str, hash_embedder: HashEmbedder
) -> None:
    from kinject.demo_data import render_scanned_page
    from kinject.stream.topics import ensure_topics

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="fastlane",
                             partitions=1, session_timeout_ms=2000)
    topics = ensure_topics(settings, kafka_bootstrap)
    worker = IngestWorker(settings, kafka_bootstrap, IngestConfig(ocr_engine="rapidocr"),
                          hash_embedder, group_id="fastlane-ingest")
    worker.start()
    producer = make_producer(settings, kafka_bootstrap)
    scan = render_scanned_page(("HARBOUR NOTICE", "Mooring costs 38 marks per night."))
    for rec in (Record(source_id="kb/scan", kind="image", content=scan),
                Record(source_id="kb/text", kind="text", content=b"The ferry leaves at noon.")):
        producer.send(topics.records, key=rec.source_id.encode(), value=encode_record(rec))
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 60
    while worker.processed < 2:
        assert time.monotonic() < deadline
        worker.poll_once(200)
    worker.close()
    chunks = make_consumer(settings, kafka_bootstrap, None, [topics.chunks],
                           consumer_timeout_ms=5000)
    order = [json.loads(m.value)["source_id"] for m in chunks]
    chunks.close()
    # published first, but the scan needs OCR: the text's update must not wait for it (the
    # scan's events, its OCR text's and then its image's, come after)
    assert order == ["kb/text", "kb/scan", "kb/scan"], order


def test_a_replica_reads_partitions_the_chunks_topic_gains_while_it_runs(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    """A restarted Tansu re-creates a topic that a producer names before kinject does, with
    Tansu's own partition count; an operator may re-create a topic with more partitions. A
    replica that kept reading only the partitions it saw at start never indexed what was
    written to the others."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from kinject.stream.clients import ClusterWatch, make_admin

    topics = Topics.from_settings(kafka)
    index = TextIndex(tmp_path / "index", hash_embedder).open()
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index, watch_every_s=0.2)
    replica = Running(mat.run)
    admin = make_admin(kafka, kafka_bootstrap)
    watch = ClusterWatch(kafka, kafka_bootstrap)
    worker: IngestWorker | None = None
    producer = make_producer(kafka, kafka_bootstrap)
    try:
        until(lambda: mat._consumer is not None and len(mat._consumer.assignment()) == 2)
        admin.delete_topics([topics.chunks])
        # The replica's own metadata requests make Tansu re-create the topic, with its default
        # partition count, often before this test can see it gone; when the topic is still
        # missing, the operator re-creates it with 5. Either way it comes back with more than 2.
        until(lambda: watch.partitions(topics.chunks) != {0, 1})
        if not watch.partitions(topics.chunks):
            try:
                admin.create_topics([NewTopic(topics.chunks, 5, 1)])
            except TopicAlreadyExistsError:
                pass  # re-created by the replica's metadata request in between
        until(lambda: len(watch.partitions(topics.chunks)) > 2)
        grown = watch.partitions(topics.chunks)
        worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                              hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
        worker.start()
        records = [Record(source_id=f"shelf/{i}", kind="text",
                          content=f"Shelf {i} of the archive holds {i + 2} maps of coast "
                                  f"number {i * 7}.".encode()) for i in range(30)]
        _publish({"producer": producer, "topics": topics}, *records)
        wanted = {r.source_id for r in records}
        deadline = time.monotonic() + 60
        while wanted - {s for s in wanted if index.docstore.lineage(s)}:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "records on the new partitions were not indexed"
            worker.poll_once(100)
        assert {tp.partition for tp in mat._consumer.assignment()} == grown
        from kafka import TopicPartition

        probe = make_consumer(kafka, kafka_bootstrap, None)
        ends = probe.end_offsets([TopicPartition(topics.chunks, p) for p in sorted(grown)])
        probe.close()
        assert sum(n for tp, n in ends.items() if tp.partition >= 2) > 0  # new ones were used
    finally:
        replica.stop()
        if worker is not None:
            worker.close()
        producer.close()
        admin.close()
        watch.close()
        index.close()


def test_a_chunk_event_from_a_worker_with_another_embedder_does_not_stop_the_replica(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    """A worker on another machine with another embedder writes 32-d vectors where the
    index holds 64-d ones. The index refused the whole batch, the materialiser failed, was
    restarted from its stored offsets and failed on the same event again: nothing published
    after it ever became searchable. The event is skipped, loudly, and the rest applied."""
    import numpy as np

    from kinject.index.changes import SourceUpdate
    from kinject.stream.events import encode_update
    from kinject.types import Chunk

    def update(sid: str, dim: int) -> bytes:
        chunk = Chunk(f"{sid}#0", f"{sid}#doc", sid, f"Harbour fact of {sid}: the lamp is lit.")
        vectors = np.ones((1, dim), np.float32) / np.sqrt(dim)
        return encode_update(SourceUpdate("upsert", sid, (chunk,), vectors, embedder=f"e{dim}"))

    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka_bootstrap)
    for sid, dim in (("kb/other", 32), ("kb/next", 64)):
        producer.send(topics.chunks, key=sid.encode(), value=update(sid, dim), partition=0)
    producer.flush()
    producer.close()
    with TextIndex(tmp_path / "index", hash_embedder).open() as index:
        mat = IndexMaterialiser(kafka, kafka_bootstrap, index)
        mat.start()
        try:
            until(lambda: mat.poll_once(200) >= 0 and _sources(index, "harbour lamp lit")
                  == {"kb/next"}, 30, "the event after the foreign one applied")
        finally:
            mat.close()
        assert index.applied_offsets(topics.chunks) == {0: 2}
