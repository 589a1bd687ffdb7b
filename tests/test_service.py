"""The facade: a replica that catches up from kinject.chunks, then searches and answers."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

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


class _HeldLoad:
    """Wraps a model loader so that a load runs only once ``release`` is set: a load that
    takes as long as the test needs (the wait is a hang guard only). ``finished`` is set
    when the load has returned."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.entered, self.release, self.finished = (threading.Event(), threading.Event(),
                                                     threading.Event())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(30)
        try:
            return self.real(*args, **kwargs)
        finally:
            self.finished.set()


def test_status_dead_letters_and_metrics_answer_while_the_generator_loads(
        tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kinject.models
    from kinject.api.app import create_app

    settings = load_settings(data_dir=tmp_path, models={
        "embedder": "hash", "embedder_zh": "none", "generator": str(tiny_lm_dir),
        "device": "cpu"})
    load = _HeldLoad(kinject.models.load_generator)
    monkeypatch.setattr(kinject.models, "load_generator", load)
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        warm = threading.Thread(target=svc.warm_up, daemon=True)  # what `kinject serve` runs
        warm.start()
        try:
            assert load.entered.wait(30)
            # the load is in progress: these answer now, not once it is over
            assert svc.dead_letter_count() == 0
            assert svc.corpus_status() is None
            assert client.get("/v1/status").status_code == 200
            assert client.get("/metrics").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["models_loaded"] is False
            assert not load.finished.is_set()
        finally:
            load.release.set()
            warm.join(60)
        assert svc.models_loaded


def test_not_ready_until_the_search_path_has_run_once(
        tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first search loaded the BM25 tokenizer and ran the embedder for the first time
    (19 s on a busy machine, after /readyz had said ready): the warm-up runs the embedder
    before readiness, and /readyz waits for it even with the generator already loaded."""
    from kinject.api.app import create_app

    settings = load_settings(data_dir=tmp_path, models={
        "embedder": "hash", "embedder_zh": "none", "generator": str(tiny_lm_dir),
        "device": "cpu"})
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        svc.answering.warm_up()  # the generator alone, as before this warm-up existed
        embedder = svc.index.embedder
        load = _HeldLoad(embedder.encode)
        monkeypatch.setattr(embedder, "encode", load)
        warm = threading.Thread(target=svc.warm_up, daemon=True)  # what `kinject serve` runs
        warm.start()
        try:
            assert load.entered.wait(30)
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["models_loaded"] is False
        finally:
            load.release.set()
            warm.join(60)
        assert load.finished.is_set()
        assert client.get("/readyz").json()["checks"]["models_loaded"] is True


def test_a_loaded_model_answers_while_another_adapter_loads(
        tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kinject.finetune.serving import AdapterSwitcher

    settings = load_settings(data_dir=tmp_path, models={
        "embedder": "hash", "embedder_zh": "none", "generator": str(tiny_lm_dir),
        "device": "cpu"})
    with KinjectService(settings) as svc:
        svc.warm_up()
        load = _HeldLoad(AdapterSwitcher.generator)
        monkeypatch.setattr(AdapterSwitcher, "generator",
                            lambda self, *args, **kw: load(self, *args, **kw))
        other = threading.Thread(target=lambda: svc.ask("who founded it?", model="base"),
                                 daemon=True)
        other.start()
        try:
            assert load.entered.wait(30)
            # the serving model answers and the stores open while "base" is being loaded
            assert svc.ask("who founded it?").abstained
            assert svc.dead_letter_count() == 0
            assert not load.finished.is_set()
        finally:
            load.release.set()
            other.join(60)


@pytest.mark.kafka
def test_an_external_broker_going_away_leaves_the_replica_ready(
        tmp_path: Path, tiny_lm_dir: Path) -> None:
    from kinject.config import KafkaSettings
    from kinject.stream.broker import EmbeddedBroker

    # A broker of its own, run as an external one (no supervisor): the test stops it.
    with EmbeddedBroker(KafkaSettings(partitions=1), port=0) as broker:
        bootstrap = broker.bootstrap_servers
        settings = load_settings(data_dir=tmp_path, kafka={
            "bootstrap_servers": bootstrap, "topic_prefix": "readiness", "partitions": 1},
            models={"embedder": "hash", "embedder_zh": "none", "generator": str(tiny_lm_dir),
                    "device": "cpu"})
        ensure_topics(settings.kafka, bootstrap)
        with KinjectService(settings) as svc:
            svc.attach(bootstrap)
            svc.warm_up()
            first = svc.ready()
            assert first["ready"] is True, first
            broker.stop()
            # Search and ask run from the local index: the replica stays in its load
            # balancer; the checks say why the broker figures are missing.
            state = svc.ready()
            assert state["ready"] is True, state
            assert state["checks"]["broker_ok"] is False and state["checks"]["broker"]
            assert "embedded_broker" not in state["checks"]
            assert svc.search("anything", 3) == []
