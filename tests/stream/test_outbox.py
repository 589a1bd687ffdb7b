"""The durable outbox: kept until the ingest group commits past it, re-sent after a restart."""

import time
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from kinject.config import KafkaSettings
from kinject.stream.broker import EmbeddedBroker
from kinject.stream.clients import make_consumer
from kinject.stream.outbox import Outbox
from kinject.stream.producer import Producer
from kinject.stream.topics import Topics, ensure_topics
from kinject.types import Record

pytestmark = pytest.mark.kafka


@pytest.fixture()
def kafka(kafka_bootstrap: str, request: pytest.FixtureRequest) -> KafkaSettings:
    prefix = "o" + str(abs(hash(request.node.nodeid)) % 10**8)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                             partitions=1, session_timeout_ms=2000)
    ensure_topics(settings, kafka_bootstrap)
    return settings


def _consume(kafka: KafkaSettings, bootstrap: str, group: str | None, n: int) -> list[object]:
    consumer = make_consumer(kafka, bootstrap, group, [Topics.from_settings(kafka).records])
    got: list[object] = []
    deadline = time.monotonic() + 20
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records arrived"
        for batch in consumer.poll(timeout_ms=200).values():
            got.extend(batch)
    if group is not None:
        # commit past the first record only, as a worker that has done one would
        first = got[0]
        tp = TopicPartition(first.topic, first.partition)  # type: ignore[attr-defined]
        consumer.commit({tp: OffsetAndMetadata(first.offset + 1, None, -1)})  # type: ignore[attr-defined]
    consumer.close()
    return got


def test_outbox_keeps_a_record_until_the_group_commits_past_it(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    group = f"{kafka.topic_prefix}-ingest"
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        with Producer(kafka, kafka_bootstrap, outbox) as producer:
            producer.publish(Record(source_id="kb/1", content=b"first"))
            producer.publish(Record(source_id="kb/2", content=b"second"))
        assert [e.state for e in outbox.pending()] == ["sent", "sent"]
        # nobody has consumed yet: nothing is confirmed
        assert outbox.confirm(kafka, kafka_bootstrap, group) == 0
        assert len(outbox) == 2
        # another group's progress does not count
        _consume(kafka, kafka_bootstrap, f"{group}-other", 2)
        assert outbox.confirm(kafka, kafka_bootstrap, group) == 0
        # the ingest group commits past the first record: only that one is pruned
        _consume(kafka, kafka_bootstrap, group, 2)
        assert outbox.confirm(kafka, kafka_bootstrap, group) == 1
        (left,) = outbox.pending()
        assert left.key == b"kb/2" and left.offset == 1


def test_outbox_survives_a_restart_and_republishes_to_a_fresh_broker(tmp_path: Path) -> None:
    path = tmp_path / "data" / "outbox.sqlite3"
    kafka = KafkaSettings(partitions=1, session_timeout_ms=2000)
    records = Topics.from_settings(kafka).records
    with EmbeddedBroker(kafka, port=0) as first:
        outbox = Outbox(path)
        with Producer(kafka, first.bootstrap_servers, outbox) as producer:
            old_cluster = producer.cluster_id
            for i in range(3):
                producer.publish(Record(source_id=f"kb/{i}", content=f"fact {i}".encode()))
            producer.publish(Record(source_id="kb/0", op="delete"))
        outbox.close()
    # the broker is gone and its in-memory log with it; the process "restarts"
    with EmbeddedBroker(kafka, port=0) as second, Outbox(path) as reopened:
        pending = reopened.pending()
        assert len(pending) == 4 and {e.cluster_id for e in pending} == {old_cluster}
        with Producer(kafka, second.bootstrap_servers, reopened) as producer:
            assert producer.cluster_id != old_cluster
            assert reopened.republish(producer) == 4
            # they are in the new cluster's log now: a second call sends nothing
            assert reopened.republish(producer) == 0
        got = _consume(kafka, second.bootstrap_servers, None, 4)
        assert [(m.key, m.offset) for m in got] == [  # type: ignore[attr-defined]
            (b"kb/0", 0), (b"kb/1", 1), (b"kb/2", 2), (b"kb/0", 3)]  # accepted order
        assert all(m.topic == records for m in got)  # type: ignore[attr-defined]
        assert {e.cluster_id for e in reopened.pending()} == {producer.cluster_id}
        # a group in the new cluster commits everything: the outbox empties
        group = Topics.from_settings(kafka).ingest_group
        consumer = make_consumer(kafka, second.bootstrap_servers, group, [records])
        deadline = time.monotonic() + 20
        seen = 0
        while seen < 4:
            assert time.monotonic() < deadline
            seen += sum(len(b) for b in consumer.poll(timeout_ms=200).values())
        consumer.commit()
        consumer.close()
        assert reopened.confirm(kafka, second.bootstrap_servers) == 4
        assert reopened.pending() == []


def test_accepted_rows_are_durable_before_any_send(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        row = outbox.accept("kinject.records", b"kb/x", b'{"source_id":"kb/x"}')
    with Outbox(path) as reopened:
        (entry,) = reopened.pending()
        assert (entry.id, entry.state, entry.key) == (row, "accepted", b"kb/x")
        mode = reopened._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_a_round_reads_no_records_bytes_and_a_resend_reads_them_in_batches(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The keeper read every pending row, values included, under the lock that every
    accepted request needs, every few seconds: with 100k records waiting for a broker, that
    was hundreds of MB read again and again while POST /v1/records waited."""
    from kinject.stream.outbox_keeper import OutboxKeeper

    with Outbox(tmp_path / "outbox.sqlite3") as outbox, \
            Producer(kafka, kafka_bootstrap, outbox) as producer:
        for i in range(1200):
            producer.publish(Record(source_id=f"kb/{i}", content=b"x" * 100))
        producer.flush()
        keeper = OutboxKeeper(outbox, producer, kafka, kafka_bootstrap)
        reads: list[str] = []
        outbox._db.set_trace_callback(reads.append)
        try:
            assert keeper.run_once() == (0, 0)  # all sent to this cluster: nothing lacks
            assert not [q for q in reads if "value" in q and q.lstrip().startswith("SELECT")]
            reads.clear()
            assert outbox.republish(producer, everything=True) == 1200
        finally:
            outbox._db.set_trace_callback(None)
        selects = [q for q in reads if "value" in q and q.lstrip().startswith("SELECT")]
        assert selects and all("LIMIT" in q for q in selects)
        assert len(selects) == 4  # 500 + 500 + 200, and the empty read that ends it
        assert len(outbox) == 1200 and {e.state for e in outbox.pending()} == {"sent"}


def test_publish_beside_serve_leaves_confirming_to_serve(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`kinject publish` beside a running serve sends to serve's embedded broker through the
    data dir's outbox. It pruned the rows the ingest group had committed, whether or not
    serve's index and corpus had read their chunk events yet: a restart of that in-memory
    broker then lost them. Serve's outbox keeper confirms them once those have read them."""
    import io

    from kinject.config import Settings
    from kinject.stream.publish import run_publish
    from kinject.stream.serve_broker import announce

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir,
                        kafka=kafka.model_copy(update={"bootstrap_servers": None}))
    lines = "".join(f'{{"source_id": "kb/{i}", "content": "fact {i}"}}\n' for i in range(2))
    with announce(data_dir, kafka_bootstrap):  # a serve (this process) runs the broker
        summary = run_publish(settings, ["-"], stdin=io.StringIO(lines))
        assert summary.published == 2
        _consume(kafka, kafka_bootstrap, f"{kafka.topic_prefix}-ingest", 2)
        run_publish(settings, ["-"], stdin=io.StringIO(""))  # confirms at its start
    with Outbox(data_dir / "outbox.sqlite3") as outbox:
        assert len(outbox) == 2


def test_the_keeper_leaves_a_record_another_process_is_sending_to_it(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`kinject publish` beside serve shares serve's outbox: serve's keeper took publish's
    records while publish was still sending them, so each was sent (and parsed, OCR'd) twice.
    Another process's record is left to it for a grace period, then taken (it died)."""
    from kinject.stream.outbox_keeper import OTHERS_GRACE_S, OutboxKeeper

    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as serve_box, Producer(kafka, kafka_bootstrap, serve_box) as producer:
        keeper = OutboxKeeper(serve_box, producer, kafka, kafka_bootstrap)
        with Outbox(path) as publish_box:  # another process: its send is in flight
            theirs = publish_box.accept(Topics.from_settings(kafka).records, b"kb/p", b"{}")
        producer.publish(Record(source_id="kb/mine", content=b"serve's own record"))
        assert keeper.run_once() == (0, 0)  # serve's own row was sent; theirs is left alone
        assert serve_box.deliver(producer, grace_s=OTHERS_GRACE_S) == 0
        states = {e.id: e.state for e in serve_box.pending()}
        assert states[theirs] == "accepted" and sorted(states.values()) == ["accepted", "sent"]
        # the other process died mid-send: once the grace has passed, the keeper sends it
        with serve_box._lock:
            serve_box._db.execute("UPDATE outbox SET accepted_at = accepted_at - ? WHERE id = ?",
                                  (OTHERS_GRACE_S + 1, theirs))
        assert keeper.run_once() == (0, 1)
        assert {e.state for e in serve_box.pending()} == {"sent"}
