"""Any client of the broker can write to kinject.records: a record naming a local file the
operator did not allow is dead-lettered, and nothing of that file becomes searchable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _messages import read_json

from _running import Running
from _wait import until
from kinject.api.auth import KEYS_FILE, KeyStore
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.pipeline import IngestConfig
from kinject.ingest.uris import UriPolicy
from kinject.stream.clients import make_producer
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
