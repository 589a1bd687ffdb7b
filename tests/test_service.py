"""The facade: a replica that catches up from kinject.chunks, then searches and answers."""

from pathlib import Path

import pytest

from kinject.config import load_settings
from kinject.errors import BrokerError
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.service import KinjectService
from kinject.stream.clients import make_producer
from kinject.stream.events import encode_update
from kinject.stream.topics import ensure_topics
from kinject.types import Chunk, content_hash


def _update(emb: HashEmbedder, source_id: str, text: str) -> SourceUpdate:
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                  source_id=source_id, text=text)
    return SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                        vectors=emb.encode([text]), embedder=emb.name)


@pytest.mark.kafka
def test_replica_catches_up_incrementally_and_searches(
    tmp_path: Path, kafka_bootstrap: str, hash_embedder: HashEmbedder,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KINJECT_KAFKA__TOPIC_PREFIX", "facade")
    monkeypatch.setenv("KINJECT_MODELS__EMBEDDER", "hash")
    settings = load_settings(data_dir=tmp_path)
    topics = ensure_topics(settings.kafka, kafka_bootstrap)
    producer = make_producer(settings.kafka, kafka_bootstrap)

    def send(source_id: str, text: str) -> None:
        producer.send(topics.chunks, key=source_id.encode(),
                      value=encode_update(_update(hash_embedder, source_id, text)))
        producer.flush()

    send("kb/a", "the lamp room holds a brass lens")
    send("kb/b", "ferries sail at dawn from Vask")
    with KinjectService(settings) as svc:
        assert svc.sync(idle_s=0.5) == 2
        assert svc.search("brass lens lamp", 1)[0].source_id == "kb/a"
    send("kb/c", "otters sleep under the pier")
    with KinjectService(settings) as svc:  # a new process: only the new update is applied
        assert svc.sync(idle_s=0.5) == 1
        assert {h.source_id for h in svc.search("otters pier ferries lens", 5)} == {
            "kb/a", "kb/b", "kb/c"}
        with pytest.raises(ValueError, match="empty"):
            svc.search("  ")
    producer.close()


def test_sync_without_a_broker_says_what_to_set(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KINJECT_MODELS__EMBEDDER", "hash")
    with KinjectService(load_settings(data_dir=tmp_path)) as svc:
        with pytest.raises(BrokerError, match="KINJECT_KAFKA__BOOTSTRAP_SERVERS"):
            svc.sync()
        assert svc.search("anything", 3) == []
