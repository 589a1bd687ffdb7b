"""kinject's Producer against the real broker: round trip, deletes, the size limit."""

import json
from pathlib import Path

import pytest
from _messages import read_topic

from kinject.config import KafkaSettings
from kinject.errors import BadRecord
from kinject.ingest.envelope import decode_record
from kinject.stream.outbox import Outbox
from kinject.stream.producer import Producer
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = pytest.mark.kafka


def test_round_trip_keys_by_source_and_keeps_per_source_order(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Otters\nThe colony counts 41 animals.\n")
    with Producer(kafka, kafka_bootstrap) as producer:
        ids = [producer.publish(Record(source_id="kb/a", kind="text", content=f"v{i}".encode()))
               for i in range(3)]
        ids.append(producer.publish_path(doc, source_id="kb/notes"))
        ids.append(producer.delete("kb/a", reason="retracted"))
    topic = Topics.from_settings(kafka).records
    assert all(i.startswith(f"{topic}/") for i in ids)  # topic/partition/offset
    msgs = read_topic(kafka, kafka_bootstrap, topic, 5)
    assert len(msgs) == 5
    records = [decode_record(m.value, m.key) for m in msgs]  # type: ignore[attr-defined]
    by_source = [r for r in records if r.source_id == "kb/a"]
    assert [r.op for r in by_source] == ["upsert"] * 3 + ["delete"]
    assert [r.content for r in by_source[:3]] == [b"v0", b"v1", b"v2"]
    assert by_source[3].meta == {"reason": "retracted"} and by_source[3].ts
    notes = next(r for r in records if r.source_id == "kb/notes")
    assert notes.kind == "markdown" and b"41 animals" in notes.content
    keys = {m.key for m in msgs}  # type: ignore[attr-defined]
    assert keys == {b"kb/a", b"kb/notes"}
    # a delete is an envelope, not a tombstone, so its reason survives
    assert all(m.value is not None for m in msgs)  # type: ignore[attr-defined]


def test_oversized_record_is_refused_before_sending(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * 11 * 1024 * 1024)
    with Outbox(tmp_path / "outbox.sqlite3") as outbox, \
            Producer(kafka, kafka_bootstrap, outbox) as producer:
        with pytest.raises(BadRecord, match=r"11\.0 MB .* over the record limit of 10\.0 MB"):
            producer.publish_path(big)
        with pytest.raises(BadRecord, match=r"kb/big.*over the limit of 10\.0 MB"):
            producer.publish(Record(source_id="kb/big", content=b"b" * (10 * 1024 * 1024)))
        small = Producer(kafka, kafka_bootstrap, max_record_bytes=1000)
        with pytest.raises(BadRecord, match="over the limit of 1,000 bytes"):
            small.publish(Record(source_id="kb/x", content=b"c" * 2000))
        small.close()
        # a record just under the limit goes through (the client's request limit follows)
        producer.publish(Record(source_id="kb/ok", content=b"d" * (3 * 1024 * 1024)))
        assert len(outbox) == 1
    msgs = read_topic(kafka, kafka_bootstrap, Topics.from_settings(kafka).records, 1)
    assert [m.key for m in msgs] == [b"kb/ok"]  # type: ignore[attr-defined]


def test_publish_returns_outbox_ids_and_flush_records_positions(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox, \
            Producer(kafka, kafka_bootstrap, outbox) as producer:
        rid = producer.publish(Record(source_id="kb/z", content=b"zeta"))
        assert rid.startswith("outbox:")
        producer.flush()
        (entry,) = outbox.pending()
        assert entry.state == "sent" and entry.offset == 0 and entry.cluster_id
        assert json.loads(entry.value or b"")["content"] == "zeta"


