"""The embedded broker dies and comes back: a supervisor restarts it on its port, and dead
letters kept in kinject's own store outlive it (the broker's log is in memory)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _wait import until
from kinject.cli import app
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.broker import EmbeddedBroker
from kinject.stream.clients import ClusterWatch
from kinject.stream.dlq import read_dead_letters
from kinject.stream.dlq_store import DeadLetterStore
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.outbox import Outbox
from kinject.stream.producer import Producer
from kinject.stream.supervisor import BrokerSupervisor
from kinject.types import Record

pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(port: int, prefix: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_prefix=prefix,
                         partitions=2, session_timeout_ms=2000, heartbeat_interval_ms=500)


def test_a_killed_embedded_broker_is_restarted_on_its_port() -> None:
    broker = EmbeddedBroker(KafkaSettings(partitions=1)).start()
    supervisor = BrokerSupervisor(broker, check_every_s=0.1, first_backoff_s=0.1)
    restarted = threading.Event()
    supervisor.on_restart(restarted.set)
    stop = threading.Event()
    thread = supervisor.start(stop)
    try:
        port, pid = broker.port, broker.pid
        assert pid is not None
        before = ClusterWatch(KafkaSettings(), broker.bootstrap_servers)
        first = before.cluster_id()
        before.close()
        os.kill(pid, signal.SIGKILL)
        assert restarted.wait(30), supervisor.state()
        assert broker.running and broker.port == port and broker.pid != pid
        assert supervisor.state()["restarts"] == 1
        watch = ClusterWatch(KafkaSettings(), f"127.0.0.1:{port}")
        try:  # the same address answers, as a new (empty) cluster
            assert watch.cluster_id() not in (None, first)
        finally:
            watch.close()
    finally:
        stop.set()
        thread.join(10)
        broker.stop()


def test_a_restart_that_fails_unexpectedly_does_not_end_supervision(tmp_path: Path) -> None:
    """Only BrokerError was caught: an OSError while starting Tansu (its log file cannot be
    opened) ended the supervisor's thread, and the broker never came back."""
    log_file = tmp_path / "logs" / "tansu.log"
    broker = EmbeddedBroker(KafkaSettings(partitions=1), log_file=log_file).start()
    supervisor = BrokerSupervisor(broker, check_every_s=0.1, first_backoff_s=0.1,
                                  max_backoff_s=0.5)
    stop = threading.Event()
    thread = supervisor.start(stop)
    try:
        port, pid = broker.port, broker.pid
        assert pid is not None
        log_file.rename(log_file.with_name("tansu.old"))
        log_file.mkdir()  # the next start cannot open its log: IsADirectoryError
        os.kill(pid, signal.SIGKILL)
        until(lambda: "IsADirectoryError" in (supervisor.last_error or ""), 30,
               "a failed restart")
        assert thread.is_alive() and not broker.running
        log_file.rmdir()
        until(lambda: supervisor.restarts == 1 and supervisor.last_error is None, 30,
               "the broker restarted once its log can be opened")
        assert broker.running and broker.port == port and thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
        broker.stop()


def test_restarts_leave_one_exit_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook that stops Tansu when kinject exits is registered once, however often the
    broker was restarted."""
    import kinject.stream.broker as broker_module

    hooks: list[Callable[..., object]] = []

    class _Atexit:
        @staticmethod
        def register(fn: Callable[..., object]) -> None:
            hooks.append(fn)

        @staticmethod
        def unregister(fn: Callable[..., object]) -> None:
            hooks[:] = [h for h in hooks if h != fn]

    monkeypatch.setattr(broker_module, "atexit", _Atexit)
    broker = EmbeddedBroker(KafkaSettings(partitions=1)).start()
    try:
        for _ in range(2):
            pid = broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            until(lambda: not broker.running, 10, "the broker died")
            broker.restart()
            assert hooks == [broker.stop]
    finally:
        broker.stop()
    assert hooks == []


def test_dead_letters_outlive_a_broker_restart_and_are_kept_once(
        tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    port = _free_port()  # both lives of the broker listen here
    kafka = _settings(port, "dlqstore")
    bootstrap = kafka.bootstrap_servers or ""
    broker = EmbeddedBroker(kafka, port=port).start()
    store = DeadLetterStore(tmp_path / "data" / "dead_letters.sqlite3")
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    stop = threading.Event()
    worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), hash_embedder,
                          dlq_store=store)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    bad = {"kb/not-json": b"{not json",
           "kb/nul": json.dumps({"source_id": "kb/nul", "kind": "pdf",
                                 "content_b64": "AAAAAA=="}).encode(),
           "kb/empty": json.dumps({"source_id": "kb/empty", "content": "   "}).encode()}
    try:
        producer = Producer(kafka, bootstrap, outbox)
        for key, value in bad.items():
            producer.send_raw(key.encode(), value)
        producer.publish(Record(source_id="kb/good", content=b"Herons nest at Quillon."))
        producer.flush()
        until(lambda: store.count() == 3, 60, "three dead letters stored")
        # The broker forgets its log; the outbox still holds the records (no one confirmed
        # them) and re-sends them into the new cluster, where they fail again.
        broker.stop()
        broker.start()
        assert read_dead_letters(kafka, bootstrap) == []  # the topic lost them
        assert outbox.republish(producer) == 4
        until(lambda: sum(d.seen for d in store.latest()) == 6, 90,
              "the re-sent bad records failing again")
        letters = store.latest()
        assert sorted(d.source_id for d in letters) == sorted(bad)
        assert all(d.seen == 2 for d in letters)
        assert {d.source_id: d.value for d in letters} == bad  # the original bytes
        assert all(d.reason and d.stage for d in letters)
        # The new cluster's topic holds the same letters: copying it in adds nothing.
        watch = ClusterWatch(kafka, bootstrap)
        assert store.mirror(read_dead_letters(kafka, bootstrap), watch.cluster_id()) == 0
        watch.close()
        assert store.count() == 3
        producer.close()
    finally:
        stop.set()
        thread.join(15)
        outbox.close()
        broker.stop()
    # Listed from the store with no broker at all: each once, with how often it failed.
    store.close()
    env = {"KINJECT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["dlq", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 of 3 dead letter(s)" in result.stdout
    for key in bad:
        assert result.stdout.count(key) == 1
