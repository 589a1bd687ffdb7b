"""The outbox keeper of a long-running producer: confirms what the ingest group committed
and re-sends what a restarted broker lost, with nobody calling confirm or republish."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from _wait import until
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.broker import EmbeddedBroker
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.outbox import Outbox
from kinject.stream.outbox_keeper import OutboxKeeper
from kinject.stream.producer import Producer
from kinject.types import Record

pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _counted(keeper: OutboxKeeper, outbox: Outbox, confirmed: int) -> bool:
    """The outbox is empty and the keeper has counted ``confirmed`` rows. A round deletes
    the rows it confirms before it adds them to its stats: on a loaded machine a poll can
    fall between the two and read an empty outbox beside the previous count."""
    return len(outbox) == 0 and keeper.stats.confirmed >= confirmed


def _why(keeper: OutboxKeeper, outbox: Outbox) -> str:
    return f"{keeper.stats}; outbox: {[(e.id, e.state, e.cluster_id) for e in outbox.pending()]}"


class _Worker:
    """An in-process ingest worker that can be stopped and started again."""

    def __init__(self, kafka: KafkaSettings, bootstrap: str, emb: HashEmbedder) -> None:
        self.worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), emb)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def test_the_keeper_confirms_and_resends_across_a_broker_restart(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    port = _free_port()  # both lives of the broker listen here
    bootstrap = f"127.0.0.1:{port}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="keeper", partitions=2,
                          session_timeout_ms=2000, heartbeat_interval_ms=500)
    broker = EmbeddedBroker(kafka, port=port).start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    index = TextIndex(tmp_path / "index", hash_embedder).open()
    stop = threading.Event()
    worker: _Worker | None = None
    lock = threading.Lock()
    try:
        producer = Producer(kafka, bootstrap, outbox)
        keeper = OutboxKeeper(outbox, producer, kafka, bootstrap, interval_s=0.3, lock=lock,
                              max_backoff_s=1.0)
        keeper_thread = keeper.start(stop)
        mat = IndexMaterialiser(kafka, bootstrap, index)
        mat_thread = threading.Thread(target=mat.run, args=(stop,), daemon=True)
        mat_thread.start()
        worker = _Worker(kafka, bootstrap, hash_embedder)

        def publish(wave: str) -> set[str]:
            with lock:  # the publishing side holds the lock it gave the keeper
                for i in range(8):
                    producer.publish(Record(f"kb/{wave}{i}", kind="text",
                                            content=f"Wave {wave} fact {i}: lamp {i}.".encode()))
                producer.flush()
            return {f"kb/{wave}{i}" for i in range(8)}

        def indexed() -> set[str]:
            assert index.docstore is not None
            return {h.source_id for h in index.search("wave fact lamp", 50)}

        wave_a = publish("a")
        until(lambda: wave_a <= indexed(), 60, "wave A indexed")
        until(lambda: _counted(keeper, outbox, 8), 60, "wave A confirmed by the keeper",
              why=lambda: _why(keeper, outbox))
        assert keeper.stats.confirmed == 8 and keeper.stats.resent == 0

        # No worker commits wave B before the broker goes: only the outbox still holds it.
        worker.close()
        wave_b = publish("b")
        time.sleep(1.0)
        assert len(outbox) == 8 and {e.state for e in outbox.pending()} == {"sent"}
        broker.stop()
        until(lambda: keeper.stats.failures > 0, 60, "a round against the stopped broker")
        assert len(outbox) == 8  # nothing is given up while the broker is away
        broker.start()  # same port, a new cluster with an empty log
        worker = _Worker(kafka, bootstrap, hash_embedder)
        until(lambda: wave_a | wave_b <= indexed(), 90,
              "wave B re-sent by the keeper and indexed")
        until(lambda: _counted(keeper, outbox, 16) and keeper.stats.last_error is None, 60,
              "wave B confirmed in the new cluster", why=lambda: _why(keeper, outbox))
        assert keeper.stats.resent == 8 and keeper.stats.confirmed == 16
        stop.set()
        keeper_thread.join(timeout=30)
        assert not keeper_thread.is_alive()
        mat_thread.join(timeout=15)
        producer.close()
    finally:
        stop.set()
        if worker is not None:
            worker.close()
        index.close()
        outbox.close()
        broker.stop()


def test_bad_settings_are_named(tmp_path: Path, kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="keeperbad")
    with Outbox(tmp_path / "o.sqlite3") as outbox, Producer(kafka, kafka_bootstrap,
                                                            outbox) as producer:
        with pytest.raises(ValueError, match="interval_s"):
            OutboxKeeper(outbox, producer, kafka, kafka_bootstrap, interval_s=0)
        with pytest.raises(ValueError, match="max_backoff_s"):
            OutboxKeeper(outbox, producer, kafka, kafka_bootstrap, 5.0, max_backoff_s=1.0)
        keeper = OutboxKeeper(outbox, producer, kafka, kafka_bootstrap)
        assert keeper.group_id == "keeperbad-ingest"
        assert keeper.run_once() == (0, 0) and keeper.stats.rounds == 1


def _sent(outbox: Outbox) -> bool:
    rows = outbox.pending()
    return bool(rows) and all(e.state == "sent" for e in rows)


def test_a_broken_outbox_file_does_not_end_the_keeper(tmp_path: Path, kafka_bootstrap: str
                                                      ) -> None:
    """Only broker errors were caught: a sqlite3.OperationalError ended the keeper's thread,
    and POST /v1/records went on answering 202 for records nothing would ever deliver."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="keeperdb",
                          partitions=1)
    path = tmp_path / "outbox.sqlite3"
    stop = threading.Event()
    with Outbox(path) as outbox, Producer(kafka, kafka_bootstrap, outbox) as producer:
        keeper = OutboxKeeper(outbox, producer, kafka, kafka_bootstrap, interval_s=0.2,
                              max_backoff_s=0.5)
        thread = keeper.start(stop)
        try:
            with sqlite3.connect(path) as other:  # the file loses its table under the keeper
                other.execute("DROP TABLE outbox")
            until(lambda: "no such table" in (keeper.stats.last_error or ""), 30,
                   "a round against the broken file")
            assert thread.is_alive() and keeper.state()["running"]
            Outbox(path).close()  # repaired: the table is back
            outbox.accept(producer.topic, b"kb/1", b'{"source_id": "kb/1", "content": "x"}')
            keeper.wake()
            until(lambda: _sent(outbox), 30, "the record delivered after the repair")
            assert keeper.stats.errors >= 1
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_record_accepted_during_the_backoff_goes_out_soon_after_the_broker_is_back(
        tmp_path: Path) -> None:
    """While backing off (here 600 s after one failed round), wake() delivered nothing: once
    an external Kafka recovered, accepted records waited for the end of the backoff."""
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="keeperwake", partitions=1)
    broker = EmbeddedBroker(kafka, port=port).start()
    stop = threading.Event()
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        producer = Producer(kafka, bootstrap, outbox)
        keeper = OutboxKeeper(outbox, producer, kafka, bootstrap, interval_s=300.0,
                              max_backoff_s=3600.0)
        thread = keeper.start(stop)
        try:
            broker.stop()
            keeper.wake(full=True)  # a round now, against the stopped broker
            until(lambda: keeper.stats.failures == 1, 60, "a failed round")
            broker.start()  # back on the same port
            outbox.accept(producer.topic, b"kb/1", b'{"source_id": "kb/1", "content": "x"}')
            keeper.wake()
            # A round that worked, not a failed one. It marks the row sent before it clears
            # last_error, so the two are polled together (read apart, a loaded machine failed
            # here with the stats caught halfway through that round's update).
            until(lambda: _sent(outbox) and keeper.stats.last_error is None, 60,
                  "the record delivered after the broker came back",
                  why=lambda: _why(keeper, outbox))
        finally:
            stop.set()
            thread.join(timeout=30)
            producer.close(timeout_s=2.0)
            broker.stop()


def test_records_a_materialiser_had_not_read_survive_a_broker_restart(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    """The keeper pruned a record once the ingest group had committed it, but its chunk
    event then lived only in the broker's log: a materialiser that had not read it yet (the
    index behind a burst, the corpus materialiser down) lost it when the embedded broker
    restarted, since the outbox no longer held the record to send again. A row leaves the
    outbox only once every reader of the chunks topic has read past what it became."""
    from kinject.errors import BrokerError
    from kinject.stream.outbox import committed_offsets
    from kinject.stream.outbox_keeper import index_reader
    from kinject.stream.topics import Topics

    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="keeperlag", partitions=2,
                          session_timeout_ms=2000, heartbeat_interval_ms=500)
    topics = Topics.from_settings(kafka)
    broker = EmbeddedBroker(kafka, port=port).start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    index = TextIndex(tmp_path / "index", hash_embedder).open()
    stop = threading.Event()
    worker: _Worker | None = None
    producer: Producer | None = None
    mat_thread: threading.Thread | None = None
    try:
        producer = Producer(kafka, bootstrap, outbox)
        keeper = OutboxKeeper(outbox, producer, kafka, bootstrap, interval_s=0.3,
                              readers=[index_reader(index, topics.chunks)])
        worker = _Worker(kafka, bootstrap, hash_embedder)
        sources = {f"kb/lag{i}" for i in range(6)}
        for sid in sorted(sources):
            producer.publish(Record(sid, kind="text", content=f"{sid}: lamp lit.".encode()))
        producer.flush()

        def ingested() -> bool:
            return sum(committed_offsets(kafka, bootstrap, topics.ingest_group)[1].values()) == 6

        until(ingested, 60, "the ingest group committed every record")
        for _ in range(3):  # rounds while the index has read nothing: nothing is pruned
            keeper.run_once()
        assert len(outbox) == 6
        worker.close()
        broker.stop()
        broker.start()  # same port, a new cluster with an empty log
        worker = _Worker(kafka, bootstrap, hash_embedder)
        mat = IndexMaterialiser(kafka, bootstrap, index)
        mat_thread = threading.Thread(target=mat.run, args=(stop,), daemon=True)
        mat_thread.start()

        def indexed() -> bool:
            try:
                keeper.run_once()  # re-sends what the new cluster lacks, prunes what is read
            except BrokerError:
                pass
            return sources <= {h.source_id for h in index.search("lamp lit", 50)}

        until(indexed, 90, "every record indexed after the restart",
              why=lambda: _why(keeper, outbox))
        assert keeper.stats.resent == 6

        def pruned() -> bool:
            keeper.run_once()
            return len(outbox) == 0

        until(pruned, 60, "the rows pruned once the index has read them",
              why=lambda: _why(keeper, outbox))
    finally:
        stop.set()
        if worker is not None:
            worker.close()
        if producer is not None:
            producer.close(timeout_s=2.0)
        if mat_thread is not None:
            mat_thread.join(timeout=15)
        index.close()
        outbox.close()
        broker.stop()
