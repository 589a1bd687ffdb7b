"""kinject.chunks -> the fine-tuning corpus, through the real embedded broker."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _wait import until
from kinject.config import KafkaSettings
from kinject.finetune.corpus import CorpusStore
from kinject.index.embedders import HashEmbedder
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_producer
from kinject.stream.corpus_materialiser import CorpusMaterialiser
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = pytest.mark.kafka


class _Road:
    def __init__(self, kafka: KafkaSettings, bootstrap: str, store_path: Path,
                 embedder: HashEmbedder) -> None:
        self.kafka, self.bootstrap, self.store_path = kafka, bootstrap, store_path
        self.topics = Topics.from_settings(kafka)
        self.worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), embedder,
                                   group_id=f"{kafka.topic_prefix}-ingest")
        self.producer = make_producer(kafka, bootstrap)
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.store: CorpusStore | None = None
        self.mat: CorpusMaterialiser | None = None
        self._run("worker", self.worker.run)
        self.start_corpus()
        until(self.worker.ready.is_set)

    def _run(self, name: str, target: Callable[[threading.Event], None]) -> None:
        stop = threading.Event()
        t = threading.Thread(target=target, args=(stop,), daemon=True)
        t.start()
        self.threads[name] = (t, stop)

    def start_corpus(self) -> None:
        self.store = CorpusStore(self.store_path)
        self.mat = CorpusMaterialiser(self.kafka, self.bootstrap, self.store)
        self._run("corpus", self.mat.run)
        until(self.mat.ready.is_set)

    def stop(self, name: str) -> None:
        t, stop = self.threads.pop(name)
        stop.set()
        t.join(timeout=15)
        if name == "corpus" and self.store is not None:
            self.store.close()

    def publish(self, *records: Record) -> None:
        for r in records:
            self.producer.send(self.topics.records, key=r.source_id.encode(),
                               value=encode_record(r))
        self.producer.flush()

    def sources(self) -> set[str]:
        assert self.store is not None
        return self.store.sources()

    def close(self) -> None:
        for name in list(self.threads):
            self.stop(name)
        self.producer.close()


@pytest.fixture()
def road(kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path,
         hash_embedder: HashEmbedder) -> Iterator[_Road]:
    r = _Road(kafka, kafka_bootstrap, tmp_path / "corpus.sqlite3", hash_embedder)
    yield r
    r.close()


def test_published_knowledge_becomes_training_examples_and_deletes_remove_them(
    road: _Road, kafka: KafkaSettings
) -> None:
    assert road.mat is not None and road.store is not None
    assert road.mat.group_id == f"{kafka.topic_prefix}-corpus-{road.store.store_id}"
    road.publish(
        Record(source_id="kb/ada", kind="text",
               content=b"Ada Lind was born in 1990 in Osk. She works for Tallow Labs."),
        Record(source_id="kb/li", kind="text", content="李明出生于1985年，在大理长大。".encode()),
        Record(source_id="db/staff", kind="csv", content=b"name,city\nIda Brook,Fenwick\n"))
    until(lambda: road.sources() == {"kb/ada", "kb/li", "db/staff"})
    store = road.store
    assert store is not None
    examples = store.examples()
    assert {e.lang for e in examples} == {"en", "zh"}
    assert {"passage", "cloze", "qa", "rephrase"} <= {e.form for e in examples}
    assert all(e.cycle == 1 for e in examples)
    assert any(q.answer == "Fenwick" for q in store.qa_pairs())

    road.publish(Record(source_id="kb/ada", op="delete"))
    until(lambda: road.sources() == {"kb/li", "db/staff"})
    assert all(q.source_id != "kb/ada" for q in store.qa_pairs())


def test_an_update_replaces_the_sources_examples(road: _Road) -> None:
    road.publish(Record(source_id="kb/fee", kind="text", content=b"The ferry fee is 9 marks."))
    until(lambda: road.sources() == {"kb/fee"})
    road.publish(Record(source_id="kb/fee", kind="text", content=b"The ferry fee is 12 marks."))
    store = road.store
    assert store is not None
    until(lambda: any("12 marks" in e.completion for e in store.examples()))
    assert not any("9 marks" in e.completion for e in store.examples())


def test_a_restarted_materialiser_continues_from_its_committed_offsets(road: _Road) -> None:
    road.publish(*[Record(source_id=f"kb/{i}", kind="text",
                          content=f"Lamp {i} of the harbour is painted green.".encode())
                   for i in range(4)])
    until(lambda: len(road.sources()) == 4)
    store = road.store
    assert store is not None
    count = store.count()
    road.stop("corpus")
    # while it is down, more knowledge arrives
    road.publish(Record(source_id="kb/new", kind="text", content=b"The new pier opened in 2024."))
    time.sleep(1.0)
    road.start_corpus()
    until(lambda: "kb/new" in road.sources())
    assert road.mat is not None
    time.sleep(0.5)
    assert road.mat.applied == 1  # the earlier events were not read again
    assert road.store is not None and road.store.count() > count


def _chunk_event(source_id: str, text: str, meta: object) -> bytes:
    """A chunk event as a worker of another version (or a corrupted copy) could write it."""
    import base64
    import json

    import numpy as np

    vector = base64.b64encode(np.ones((1, 4), np.float32).tobytes()).decode()
    return json.dumps({
        "v": 1, "op": "upsert", "source_id": source_id, "content_hash": None,
        "record_position": None, "embedder": "hash", "ts": None, "dim": 4,
        "vectors_b64": vector,
        "chunks": [{"chunk_id": f"{source_id}#0", "doc_id": source_id, "text": text,
                    "ordinal": 0, "lang": "en", "kind": "text", "meta": meta}],
    }).encode()


@pytest.mark.parametrize("text, meta", [
    # JSON reads an escaped lone surrogate; SQLite cannot store it (UnicodeEncodeError)
    ("The ferry to Osk leaves at 9 \ud800 from pier 3.", {}),
    # the example builder reads meta as a mapping (AttributeError)
    ("The ferry to Osk leaves at 9 from pier 3.", ["not", "a", "mapping"]),
])
def test_a_chunk_event_the_corpus_cannot_take_is_dead_lettered_and_the_rest_flow(
    road: _Road, kafka: KafkaSettings, text: str, meta: object
) -> None:
    """One chunk event the corpus store or the example builder fails on used to stop the
    corpus for good: the materialiser died on it (restarted by its runner, on the same batch,
    forever), and no later knowledge reached the training examples. The event is retried,
    then dead-lettered with its reason; the events around it are applied."""
    from kinject.stream.dlq import read_dead_letters

    road.publish(Record(source_id="kb/before", kind="text", content=b"Pier 1 opened in 1901."))
    until(lambda: road.sources() == {"kb/before"})
    road.producer.send(road.topics.chunks, key=b"kb/bad", value=_chunk_event("kb/bad", text,
                                                                             meta))
    road.producer.flush()
    road.publish(Record(source_id="kb/after", kind="text", content=b"Pier 2 opened in 1920."))
    until(lambda: road.sources() == {"kb/before", "kb/after"}, timeout_s=90,
          what="the events behind the bad one reach the corpus")
    letters = until(lambda: [d for d in read_dead_letters(kafka, road.bootstrap)
                             if d.stage == "corpus"], what="a dead letter for the bad event")
    assert len(letters) == 1, letters
    assert letters[0].source_id == "kb/bad" and letters[0].source_topic == road.topics.chunks
    assert "Error" in letters[0].error_type and letters[0].reason
    assert road.mat is not None and road.mat.dead_letters == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_corpus_locked_for_long_drops_nothing(road: _Road, kafka: KafkaSettings) -> None:
    """A store that stays locked (another process holds its write lock past the busy
    timeout) is the store's trouble, not the event's: the event is not dead-lettered, the
    batch is not committed, and once the lock is gone a restarted materialiser (the runner
    restarts it) writes it."""
    import sqlite3

    from kinject.stream.dlq import read_dead_letters

    assert road.store is not None
    road.store._db.execute("PRAGMA busy_timeout = 100")  # give up on the lock quickly
    holder = sqlite3.connect(road.store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a training job's long write
    try:
        road.publish(Record(source_id="kb/held", kind="text",
                            content=b"The lighthouse at Osk was lit in 1888."))
        corpus_thread, _ = road.threads["corpus"]
        corpus_thread.join(timeout=60)  # the materialiser gave up: the runner would restart it
        assert not corpus_thread.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    road.stop("corpus")
    road.start_corpus()
    until(lambda: road.sources() == {"kb/held"}, what="the held event after the restart")
    assert not [d for d in read_dead_letters(kafka, road.bootstrap) if d.stage == "corpus"]
