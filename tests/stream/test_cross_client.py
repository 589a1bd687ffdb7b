"""kinject speaks plain Kafka: records from librdkafka (confluent-kafka) are ingested by
kinject's kafka-python workers, and what kinject's producer writes is read by librdkafka.

librdkafka opens its sockets in C, past the autouse guard on Python's ``socket`` module, so
these tests hand it the loopback address itself (no name to resolve) and check that the
broker metadata it learns names loopback addresses only.
"""

import base64
import ipaddress
import json
import time
from typing import Any

import pytest
from _messages import read_topic

from kinject.config import KafkaSettings
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.ingest.envelope import decode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import parse_bootstrap
from kinject.stream.events import decode_update
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.producer import Producer
from kinject.stream.topics import Topics
from kinject.types import Record

ck = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.kafka


def _rdkafka_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """librdkafka options that can reach nothing but the loopback broker."""
    servers = parse_bootstrap(bootstrap)
    for host, _ in servers:
        assert ipaddress.ip_address(host).is_loopback, f"{host} is not a loopback address"
    v6 = any(":" in host for host, _ in servers)
    config = {
        "bootstrap.servers": ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                                      for h, p in servers),
        "broker.address.family": "v6" if v6 else "v4",
        "client.id": "kinject-test-rdkafka",
        "socket.timeout.ms": 10000,
    }
    config.update(extra)
    return config


def _assert_only_loopback(client: Any) -> None:
    """Every broker librdkafka was told about (bootstrap and advertised) is on loopback."""
    brokers = client.list_topics(timeout=10).brokers.values()
    assert brokers
    for broker in brokers:
        assert ipaddress.ip_address(broker.host).is_loopback, f"librdkafka knows {broker.host}"


def test_records_produced_with_librdkafka_are_ingested_by_kinject_workers(
    kafka: KafkaSettings, kafka_bootstrap: str, hash_embedder: HashEmbedder
) -> None:
    topics = Topics.from_settings(kafka)
    producer = ck.Producer(_rdkafka_config(kafka_bootstrap, acks="all"))
    _assert_only_loopback(producer)
    csv = "name,role\nIda Brook,warden\nTom Hale,ranger\n"
    # Envelopes written by hand, as a producer in another language would write them.
    messages: list[tuple[str, dict[str, Any] | None]] = [
        ("xc/otters", {"op": "upsert", "source_id": "xc/otters", "kind": "text",
                       "content": "The river otter colony at Fenwick counts 41 animals."}),
        ("xc/tea", {"op": "upsert", "source_id": "xc/tea", "kind": "text",
                    "content": "雾眉茶产自泰斯利岛的北坡，每年四月由灯塔守护人采摘。"}),
        ("xc/staff", {"op": "upsert", "source_id": "xc/staff", "kind": "csv",
                      "content_b64": base64.b64encode(csv.encode()).decode("ascii")}),
        ("xc/staff", None),  # a Kafka tombstone after the upsert: per-source order must hold
    ]
    delivered: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        delivered.append((err, msg))

    for key, envelope in messages:
        value = None if envelope is None else json.dumps(envelope, ensure_ascii=False).encode()
        producer.produce(topics.records, key=key.encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(20) == 0, "librdkafka did not deliver everything"
    assert [err for err, _ in delivered] == [None] * len(messages)

    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while worker.processed < len(messages):
            assert time.monotonic() < deadline, f"worker processed only {worker.processed}"
            worker.poll_once(200)
    finally:
        worker.close()
    assert worker.dead_letters == 0

    events = read_topic(kafka, kafka_bootstrap, topics.chunks, len(messages))
    assert len(events) == len(messages)
    updates: dict[str, list[SourceUpdate]] = {}
    for msg in sorted(events, key=lambda m: (m.partition, m.offset)):
        update = decode_update(msg.value)
        assert msg.key == update.source_id.encode()
        updates.setdefault(update.source_id, []).append(update)
    assert set(updates) == {"xc/otters", "xc/tea", "xc/staff"}
    assert [u.op for u in updates["xc/staff"]] == ["upsert", "delete"]
    for sid, needle in (("xc/otters", "41 animals"), ("xc/tea", "雾眉茶"),
                        ("xc/staff", "Ida Brook")):
        upsert = updates[sid][0]
        assert upsert.op == "upsert" and upsert.chunks
        assert all(c.source_id == sid for c in upsert.chunks)
        assert needle in " ".join(c.text for c in upsert.chunks)
        assert upsert.vectors.shape == (len(upsert.chunks), hash_embedder.dim)
        # lineage points back at the message librdkafka produced
        assert upsert.record_position is not None
        assert upsert.record_position[0] == topics.records


def test_records_from_kinjects_producer_are_read_by_librdkafka(
    kafka: KafkaSettings, kafka_bootstrap: str
) -> None:
    topic = Topics.from_settings(kafka).records
    text = "Lamp oil for the Gullspire light is stored in shed 4. 灯油存放在四号棚。"
    with Producer(kafka, kafka_bootstrap) as producer:
        producer.publish(Record(source_id="xc/notes", kind="text", content=text.encode(),
                                meta={"author": "Ida Brook"}))
        producer.delete("xc/notes", reason="retracted")

    consumer = ck.Consumer(_rdkafka_config(
        kafka_bootstrap, **{"group.id": f"{kafka.topic_prefix}-rdkafka",
                            "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    try:
        _assert_only_loopback(consumer)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        # assign, not subscribe: no group join to wait for
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()

    assert len(got) == 2
    upsert, delete = sorted(got, key=lambda m: m.offset())
    assert upsert.partition() == delete.partition()  # keyed by source id
    assert upsert.key() == delete.key() == b"xc/notes"
    envelope = json.loads(upsert.value())
    assert envelope["op"] == "upsert"
    assert envelope["source_id"] == "xc/notes"
    assert envelope["kind"] == "text"
    assert envelope["content"] == text
    assert envelope["meta"] == {"author": "Ida Brook"}
    assert isinstance(envelope["ts"], float)
    gone = json.loads(delete.value())
    assert gone["op"] == "delete" and gone["source_id"] == "xc/notes"
    assert gone["meta"] == {"reason": "retracted"}
    # and kinject reads back exactly what librdkafka saw
    record = decode_record(upsert.value(), upsert.key(),
                           (upsert.topic(), upsert.partition(), upsert.offset()))
    assert record.content == text.encode() and record.meta == {"author": "Ida Brook"}
