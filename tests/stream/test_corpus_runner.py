"""The corpus materialiser as `kinject serve`, `worker` and `finetune schedule` run it: one
consumer group per corpus store (processes on one data dir share the work, another data dir
gets every event), through the real embedded broker."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from _wait import until
from kinject.config import KafkaSettings, Settings, load_settings
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.jobs import corpus_path
from kinject.index.changes import SourceUpdate
from kinject.ingest.envelope import encode_record
from kinject.stream.clients import make_producer
from kinject.stream.corpus_runner import (
    CorpusRunner,
    corpus_materialiser,
    start_corpus_materialiser,
)
from kinject.stream.events import encode_update
from kinject.stream.lag import BrokerStatus
from kinject.stream.topics import Topics
from kinject.types import Chunk, Record, content_hash

pytestmark = pytest.mark.kafka


def _settings(data_dir: Path, kafka: KafkaSettings, **finetune: object) -> Settings:
    return load_settings(data_dir=data_dir, kafka=kafka,
                         models={"embedder": "hash", "embedder_zh": "none"},
                         ingest={"ocr_engine": "none"}, finetune=finetune)


def _event(source_id: str, city: str) -> bytes:
    text = f"name: {source_id}\ncity: {city}"
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                  source_id=source_id, text=text, kind="csv")
    return encode_update(SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                                      vectors=np.zeros((1, 4), np.float32), embedder="hash"))


def _sources(data_dir: Path) -> set[str]:
    path = corpus_path(data_dir)
    if not path.is_file():
        return set()
    with CorpusStore(path) as store:
        return store.sources()


def _applied(runners: list[CorpusRunner | None]) -> list[int]:
    return [r.applied for r in runners if r is not None]


def _settled(runners: list[CorpusRunner | None], status: BrokerStatus, store_id: str
             ) -> list[int] | None:
    """The runners' applied counts once the corpus group has committed every chunk event
    (lag 0: nothing is left to read, so nothing can be read twice) and the counts, which a
    runner raises just after its commit, no longer move across a broker round trip."""
    before = _applied(runners)
    if sum(status.corpus_lag(store_id).values()) != 0 or sum(before) < 6:
        return None
    return before if _applied(runners) == before else None


def test_two_processes_share_the_corpus_work_and_never_double_it(
        data_dir: Path, kafka: KafkaSettings) -> None:
    settings = _settings(data_dir, kafka)
    stop = threading.Event()
    # what `kinject serve` and `kinject worker` each start, on the one data dir
    runners = [start_corpus_materialiser(settings, kafka.bootstrap_servers or "", stop)
               for _ in range(2)]
    assert all(r is not None for r in runners)
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    try:
        # both hold a partition of the two before anything is published
        until(lambda: all(r is not None and r.ready for r in runners))
        until(lambda: all(r is not None and r.materialiser is not None
                           and len(r.materialiser._consumer.assignment()) == 1
                           for r in runners))
        wanted = {f"kb/{i}" for i in range(6)}
        for i in range(6):
            producer.send(topics.chunks, key=f"kb/{i}".encode(), value=_event(f"kb/{i}", "Osk"),
                          partition=i % 2)
        producer.flush()
        until(lambda: _sources(data_dir) == wanted, what="the six sources in the corpus")
        with CorpusStore(corpus_path(data_dir)) as store:
            store_id = store.store_id
        # one store, one group: named after the store's id
        assert {r.materialiser.group_id for r in runners
                if r is not None and r.materialiser is not None} == {
            f"{kafka.topic_prefix}-corpus-{store_id}"}
        status = BrokerStatus(kafka, kafka.bootstrap_servers or "")
        try:
            applied = until(lambda: _settled(runners, status, store_id), 45,
                            "the corpus group to commit all six events",
                            why=lambda: f"applied {_applied(runners)}, lag "
                                        f"{status.corpus_lag(store_id)}")
        finally:
            status.close()
        assert sorted(applied) == [3, 3], applied  # each took its partition, once
    finally:
        stop.set()
        for r in runners:
            if r is not None:
                r.join(15)
        producer.close()


def test_two_data_dirs_each_get_every_event(tmp_path: Path, kafka: KafkaSettings) -> None:
    # `kinject serve` on two hosts, each with a data dir of its own: had they shared one
    # group, each corpus would hold the half of the events its partition carried.
    dirs = [tmp_path / "host-a", tmp_path / "host-b"]
    stop = threading.Event()
    runners = [start_corpus_materialiser(_settings(d, kafka), kafka.bootstrap_servers or "",
                                         stop) for d in dirs]
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    try:
        until(lambda: all(r is not None and r.ready for r in runners), what="both runners ready")
        wanted = {f"kb/{i}" for i in range(6)}
        for i in range(6):
            producer.send(topics.chunks, key=f"kb/{i}".encode(), value=_event(f"kb/{i}", "Osk"),
                          partition=i % 2)
        producer.flush()
        for d in dirs:
            until(lambda d=d: _sources(d) == wanted, what=f"every event in {d.name}")
        groups = {r.materialiser.group_id for r in runners
                  if r is not None and r.materialiser is not None}
        assert len(groups) == 2, groups
    finally:
        stop.set()
        for r in runners:
            if r is not None:
                r.join(15)
        producer.close()


def test_a_process_told_not_to_materialise_starts_nothing(
        data_dir: Path, kafka: KafkaSettings) -> None:
    settings = _settings(data_dir, kafka, materialise_corpus=False)
    assert start_corpus_materialiser(settings, kafka.bootstrap_servers or "",
                                     threading.Event()) is None
    with corpus_materialiser(settings) as runner:
        assert runner is None


def test_the_schedulers_materialiser_fills_the_corpus_while_it_runs(
        data_dir: Path, kafka: KafkaSettings) -> None:
    settings = _settings(data_dir, kafka)
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    producer.send(Topics.from_settings(kafka).chunks, key=b"kb/pia",
                  value=_event("kb/pia", "Oskarn"))
    producer.flush()
    producer.close()
    with corpus_materialiser(settings) as runner:  # `kinject finetune schedule` wraps its loop
        assert runner is not None
        until(lambda: _sources(data_dir) == {"kb/pia"})
    assert not runner.is_alive()


def test_kinject_worker_ingests_and_fills_the_corpus(data_dir: Path,
                                                      kafka: KafkaSettings) -> None:
    from kinject.stream.runner import run_ingest_workers

    settings = _settings(data_dir, kafka)
    stop = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            run_ingest_workers(settings, 1, stop, corpus=True)  # what `kinject worker` runs
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    try:
        producer.send(Topics.from_settings(kafka).records, key=b"db/staff", value=encode_record(
            Record(source_id="db/staff", kind="csv", content=b"name,city\nIda Brook,Fenwick\n")))
        producer.flush()
        until(lambda: _sources(data_dir) == {"db/staff"} or bool(failed), 60)
        assert not failed
        with CorpusStore(corpus_path(data_dir)) as store:
            assert any(q.answer == "Fenwick" for q in store.qa_pairs())
    finally:
        stop.set()
        thread.join(30)
        producer.close()
