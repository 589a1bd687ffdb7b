"""The embedded broker and the client factories against a real Tansu broker."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from _wait import until
from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.stream.broker import EmbeddedBroker, connect, find_tansu
from kinject.stream.clients import make_admin, make_consumer, make_producer, wait_until_reachable
from kinject.stream.topics import Topics, ensure_topics


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu_children() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.name() == "tansu" and p.status() != psutil.STATUS_ZOMBIE
    }


def _gone(pid: int) -> bool:
    """Exited: gone, or a zombie waiting to be reaped (it holds no port and runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture()
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own (the session one is shared)."""
    b = EmbeddedBroker(KafkaSettings(topic_prefix="own"), port=0)
    try:
        yield b.start()
    finally:
        b.stop()


def test_find_tansu_returns_an_executable() -> None:
    path = find_tansu()
    assert path.name == "tansu"
    assert path.is_file()


@pytest.mark.kafka
def test_kinject_topics_exist_with_the_configured_partitions(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(partitions=3)
    topics = Topics.from_settings(kafka)
    admin = make_admin(kafka, kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics.all())}
    finally:
        admin.close()
    assert described == {
        "kinject.records": 3,
        "kinject.chunks": 3,
        "kinject.dlq": 3,
        "kinject.adapters": 1,
    }


@pytest.mark.kafka
def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(topic_prefix=f"idem-{uuid.uuid4().hex[:8]}", partitions=2)
    first = ensure_topics(kafka, kafka_bootstrap, timeout_s=10)
    second = ensure_topics(kafka, kafka_bootstrap, timeout_s=10)
    assert first == second
    assert first.records == f"{kafka.topic_prefix}.records"
    admin = make_admin(kafka, kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(first.all())}
    finally:
        admin.close()
    assert described[first.records] == 2
    assert described[first.adapters] == 1


@pytest.mark.kafka
@pytest.mark.slow
def test_a_record_produced_is_consumed_by_a_group_and_committed(kafka_bootstrap: str) -> None:
    from kafka import TopicPartition

    kafka = KafkaSettings()
    topic = Topics.from_settings(kafka).records
    key, value = b"source-1", f"payload {uuid.uuid4()}".encode()
    producer = make_producer(kafka, kafka_bootstrap)
    try:
        sent = producer.send(topic, key=key, value=value).get(timeout=10)
    finally:
        producer.close()

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(kafka, kafka_bootstrap, group, [topic])
    started = time.monotonic()
    try:
        found = None
        while found is None and time.monotonic() - started < 20:
            for records in consumer.poll(timeout_ms=500).values():
                found = next((r for r in records if r.value == value), found)
        assert found is not None, "the record never arrived"
        assert found.key == key
        assert (found.partition, found.offset) == (sent.partition, sent.offset)
        consumer.commit()
        tp = TopicPartition(topic, found.partition)
        assert consumer.committed(tp) == found.offset + 1
    finally:
        consumer.close()
    # Short group timings from the settings: a join takes seconds, not the default ~23 s.
    assert time.monotonic() - started < 10


@pytest.mark.kafka
def test_connect_to_configured_servers_starts_no_broker(kafka_bootstrap: str) -> None:
    before = _tansu_children()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="external")
    with connect(kafka, timeout_s=10) as bootstrap:
        assert bootstrap == kafka_bootstrap
        assert _tansu_children() == before
        admin = make_admin(kafka, bootstrap)
        try:
            assert "external.records" in admin.list_topics()
        finally:
            admin.close()


def test_connect_to_unreachable_servers_names_them() -> None:
    servers = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        with connect(KafkaSettings(bootstrap_servers=servers), timeout_s=1):
            pytest.fail("connect() yielded for an unreachable broker")
    assert servers in str(caught.value)
    assert "KINJECT_KAFKA__BOOTSTRAP_SERVERS" in str(caught.value)
    assert time.monotonic() - started < 5


def test_wait_until_reachable_rejects_a_bad_port() -> None:
    with pytest.raises(BrokerError, match="bad port"):
        wait_until_reachable("127.0.0.1:notaport", 0.1)


@pytest.mark.kafka
def test_connect_without_servers_runs_a_broker_only_inside_the_block() -> None:
    before = _tansu_children()
    with connect(KafkaSettings(topic_prefix="embedded"), timeout_s=30) as bootstrap:
        started = _tansu_children() - before
        assert len(started) == 1
        wait_until_reachable(bootstrap, 5)
    (pid,) = started
    until(lambda: _gone(pid), 5, f"tansu pid {pid} to exit")


@pytest.mark.kafka
def test_stop_leaves_no_process_and_is_idempotent(broker: EmbeddedBroker) -> None:
    pid = broker.pid
    port = broker.port
    assert pid is not None and port is not None
    broker.stop()
    broker.stop()
    until(lambda: _gone(pid), 5, f"tansu pid {pid} to exit")
    assert not broker.running
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()  # a new broker could listen on the port again


def test_a_port_in_use_is_reported() -> None:
    before = _tansu_children()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(KafkaSettings(), port=port).start()
    assert _tansu_children() == before  # nothing was left running


@pytest.mark.kafka
def test_a_broker_started_from_a_thread_outlives_the_thread() -> None:
    # PR_SET_PDEATHSIG follows the forking thread, not the process: the broker must not die
    # when the thread that started it ends.
    holder: list[EmbeddedBroker] = []
    thread = threading.Thread(target=lambda: holder.append(EmbeddedBroker(KafkaSettings()).start()))
    thread.start()
    thread.join(timeout=60)
    (b,) = holder
    try:
        time.sleep(0.3)  # a pdeathsig kill would be immediate
        assert b.running
        wait_until_reachable(b.bootstrap_servers, 5)
    finally:
        b.stop()


@pytest.mark.kafka
def test_a_port_taken_during_start_up_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # The race a free-port pick cannot rule out: another process binds the port between
    # the pick and Tansu's bind. Tansu then dies, and start() must try another port.
    import kinject.stream.broker as broker_module

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])
        real_free_port, real_is_free = broker_module._free_port, broker_module._port_is_free
        monkeypatch.setattr(broker_module, "_free_port", lambda h: next(picks, real_free_port(h)))
        lies = iter([True])
        monkeypatch.setattr(
            broker_module, "_port_is_free", lambda h, p: next(lies, real_is_free(h, p))
        )
        with EmbeddedBroker(KafkaSettings(topic_prefix="retry")) as b:
            assert b.port != port
            wait_until_reachable(b.bootstrap_servers, 5)


@pytest.mark.kafka
def test_the_broker_log_goes_to_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "tansu.log"
    with EmbeddedBroker(KafkaSettings(topic_prefix="logged"), log_file=log) as b:
        port = b.port
    text = log.read_text()
    assert f"127.0.0.1:{port}" in text
    assert "\x1b[" not in text  # plain text, no terminal colours


@pytest.mark.kafka
def test_stop_is_quick_while_clients_are_connected() -> None:
    kafka = KafkaSettings(topic_prefix="busy")
    b = EmbeddedBroker(kafka).start()
    producer = make_producer(kafka, b.bootstrap_servers)
    try:
        producer.send(Topics.from_settings(kafka).records, b"x").get(timeout=10)
        started = time.monotonic()
        b.stop()
        assert time.monotonic() - started < 2  # no wait for clients to leave a memory log
    finally:
        b.stop()
        producer.close(timeout=1)


@pytest.mark.kafka
def test_a_broker_that_died_can_be_started_again() -> None:
    b = EmbeddedBroker(KafkaSettings(topic_prefix="again"))
    try:
        pid = b.start().pid
        assert pid is not None
        psutil.Process(pid).kill()
        deadline = time.monotonic() + 5
        while b.running and time.monotonic() < deadline:
            time.sleep(0.02)  # a multithreaded process is a zombie before it can be reaped
        assert not b.running
        b.start()
        assert b.running and b.pid != pid
        wait_until_reachable(b.bootstrap_servers, 5)
    finally:
        b.stop()


def test_the_embedded_broker_listens_on_loopback_only(broker: EmbeddedBroker) -> None:
    """Tansu has no authentication here: no other machine may reach it."""
    assert broker.pid is not None
    listening = [c.laddr for c in psutil.Process(broker.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    for host in ("0.0.0.0", "::", "192.168.1.10", "kafka.example.com"):
        with pytest.raises(ValueError, match="loopback only"):
            EmbeddedBroker(KafkaSettings(), host=host)


def test_tls_and_sasl_settings_reach_every_client_and_no_repr(tmp_path: Path) -> None:
    from kinject.config import load_settings
    from kinject.stream.clients import client_config

    ca = tmp_path / "ca.pem"
    settings = load_settings(kafka={
        "bootstrap_servers": "kafka.internal:9093", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "kinject",
        "sasl_password": "pw-sasl-123", "ssl_cafile": str(ca), "ssl_password": "pw-key-456"})
    config = client_config(settings.kafka, "kafka.internal:9093")
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_plain_password"] == "pw-sasl-123"
    assert config["ssl_cafile"] == str(ca) and config["ssl_password"] == "pw-key-456"
    assert config["ssl_check_hostname"] is True
    shown = repr(settings) + str(settings.kafka) + settings.model_dump_json()
    assert "pw-sasl-123" not in shown and "pw-key-456" not in shown
