"""Any client of the broker can write to kinject.records: a record naming a local file the
operator did not allow is dead-lettered, and nothing of that file becomes searchable."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _messages import read_json

from _drip import drip_server
from _running import Running
from _wait import until
from kinject.api.auth import KEYS_FILE, KeyStore
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.pipeline import IngestConfig
from kinject.ingest.uris import UriPolicy
from kinject.stream.clients import make_consumer, make_producer
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics

pytestmark = pytest.mark.kafka


def test_records_naming_files_outside_the_allowed_directory_are_dead_lettered(
        kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path, data_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    allowed = tmp_path / "drop"
    allowed.mkdir()
    (allowed / "pier.txt").write_text("The tide gauge at Orrin pier reads in metres.")
    _, key = KeyStore(data_dir / KEYS_FILE).create("ops", "admin")
    (allowed / "keys-link.json").symlink_to(data_dir / KEYS_FILE)
    hostile = {
        "evil/passwd": "/etc/passwd",
        "evil/keys": str(data_dir / KEYS_FILE),
        "evil/keys-uri": (data_dir / KEYS_FILE).as_uri(),
        "evil/symlink": str(allowed / "keys-link.json"),
    }
    index = TextIndex(tmp_path / "index", hash_embedder).open()
    worker = IngestWorker(kafka, kafka_bootstrap,
                          IngestConfig(ocr_engine="none", uris=UriPolicy(dirs=(allowed,))),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index)
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka_bootstrap)
    try:
        with Running(worker.run, mat.run):
            for sid, uri in [*hostile.items(), ("ok/pier", str(allowed / "pier.txt"))]:
                producer.send(topics.records, key=sid.encode(),
                              value=json.dumps({"source_id": sid, "uri": uri}).encode())
            producer.flush()
            until(lambda: worker.processed >= len(hostile) + 1 and "ok/pier" in {
                h.source_id for h in index.search("tide gauge Orrin pier", 5)})
    finally:
        producer.close()
    assert worker.dead_letters == len(hostile)
    for query in ("root x 0 0 bin bash", "keys hash salt admin ops", key):
        assert not {h.source_id for h in index.search(query, 10)} & set(hostile)
    assert index.docstore is not None
    assert all(not index.docstore.lineage(sid) for sid in hostile)

    letters = read_json(kafka, kafka_bootstrap, topics.dlq, len(hostile))
    reasons = {json.loads(_b64(letter["value_b64"]))["source_id"]: letter["reason"]
               for letter in letters}
    assert set(reasons) == set(hostile)
    assert "outside the allowed directories" in reasons["evil/symlink"]
    for sid in ("evil/passwd", "evil/keys", "evil/keys-uri"):
        assert "outside the allowed directories" in reasons[sid], reasons[sid]
    assert all(letter["stage"] == "validate" for letter in letters)
    index.close()


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _run_worker(worker: IngestWorker, kafka: KafkaSettings, bootstrap: str,
                records: list[dict[str, Any]], good: set[str]) -> list[dict[str, Any]]:
    """Publish ``records``, run ``worker`` until the ``good`` ones reached kinject.chunks;
    returns the chunk events. The worker must stay up throughout."""
    topics = Topics.from_settings(kafka)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    producer = make_producer(kafka, bootstrap)
    consumer = make_consumer(kafka, bootstrap, None, [topics.chunks])
    events: list[dict[str, Any]] = []
    try:
        for record in records:
            producer.send(topics.records, key=record["source_id"].encode(),
                          value=json.dumps(record).encode(), partition=0)
        producer.flush()
        deadline = time.monotonic() + 60
        while not good <= {e["source_id"] for e in events}:
            assert thread.is_alive(), "the ingest worker died"
            assert time.monotonic() < deadline, (
                f"only {worker.processed} record(s) processed, {worker.dead_letters} "
                "dead-lettered: the worker is stuck")
            for batch in consumer.poll(timeout_ms=200).values():
                events.extend(json.loads(m.value) for m in batch)
        assert thread.is_alive() and worker.reconnects == 0
    finally:
        stop.set()
        thread.join(timeout=15)
        producer.close()
        consumer.close()
    return events


def test_a_record_whose_uri_cannot_be_read_never_stops_the_worker(
        kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path, data_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    """A NUL byte in a path raised ValueError out of poll_once: the worker died, and the
    worker restarted in its place read the same batch and died again. A FIFO blocked it."""
    allowed = tmp_path / "drop"
    allowed.mkdir()
    (allowed / "pier.txt").write_text("The tide gauge at Orrin pier reads in metres.")
    os.mkfifo(allowed / "pipe.txt")
    KeyStore(data_dir / KEYS_FILE).create("ops", "admin")
    # The data dir lies inside the allowed one: it is still never read.
    policy = UriPolicy(dirs=(tmp_path,), deny_dirs=(data_dir,),
                       url_prefixes=("https://docs.example.com/m/",))
    hostile = {"evil/nul": f"{allowed}/a\u0000b",
               "evil/url": "https://docs.example.com/m/a?q=\x00",
               "evil/fifo": str(allowed / "pipe.txt"),
               "evil/keys": str(data_dir / KEYS_FILE)}
    records = [{"source_id": sid, "uri": uri} for sid, uri in hostile.items()]
    records.append({"source_id": "ok/pier", "uri": str(allowed / "pier.txt")})
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none", uris=policy),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
    events = _run_worker(worker, kafka, kafka_bootstrap, records, {"ok/pier"})
    assert {e["source_id"] for e in events} == {"ok/pier"}
    assert worker.dead_letters == len(hostile)
    letters = read_json(kafka, kafka_bootstrap, Topics.from_settings(kafka).dlq,
                            len(hostile))
    reasons = {json.loads(_b64(letter["value_b64"]))["source_id"]: letter["reason"]
               for letter in letters}
    assert "control character" in reasons["evil/nul"]
    assert "control character" in reasons["evil/url"]
    assert "not a regular file" in reasons["evil/fifo"]
    assert "data directory" in reasons["evil/keys"]


@pytest.fixture()
def drip() -> Iterator[str]:
    with drip_server() as url:
        yield url


def test_a_uri_is_read_within_the_records_time_budget(
        kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path, drip: str,
        hash_embedder: HashEmbedder) -> None:
    """The uri used to be read in the worker's thread, outside the budget: a server that
    drips a byte at a time held the partition for as long as it liked."""
    (tmp_path / "pier.txt").write_text("The tide gauge at Orrin pier reads in metres.")
    policy = UriPolicy(dirs=(tmp_path,), url_prefixes=(f"{drip}/m/",))
    records = [{"source_id": "slow/drip", "uri": f"{drip}/m/slow"},
               {"source_id": "ok/pier", "uri": str(tmp_path / "pier.txt")}]
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none", uris=policy),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest",
                          record_timeout_s=10.0)  # the server drips for 60 s
    events = _run_worker(worker, kafka, kafka_bootstrap, records, {"ok/pier"})
    assert {e["source_id"] for e in events} == {"ok/pier"}
    assert worker.dead_letters == 1
    assert worker.child is not None and worker.child.killed == 1
    [letter] = read_json(kafka, kafka_bootstrap, Topics.from_settings(kafka).dlq, 1)
    assert letter["error_type"] == "RecordTimeout" and letter["stage"] == "ingest"
