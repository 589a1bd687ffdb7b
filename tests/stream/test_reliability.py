"""What production does to the stream: workers killed with SIGKILL, the broker restarted.

Real processes (`kinject worker`), the real broker, the real index: afterwards every source
is in the index exactly once and nothing accepted is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from _wait import until
from kinject.config import KafkaSettings
from kinject.index.embedders import load_embedder
from kinject.index.text_index import TextIndex
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.stream.clients import make_admin, make_consumer, make_producer
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SESSION_MS = 2000
_JOINED = "ingest worker(s) in group"  # what `kinject worker` logs once it runs


def _as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_worker(
    settings: KafkaSettings, bootstrap: str, data_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KINJECT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "KINJECT_KAFKA__TOPIC_PREFIX": settings.topic_prefix,
        "KINJECT_KAFKA__PARTITIONS": str(settings.partitions),
        "KINJECT_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_MS),
        "KINJECT_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "KINJECT_MODELS__EMBEDDER": "hash",
        "KINJECT_INGEST__OCR_ENGINE": "none",
        "KINJECT_INGEST__BATCH_SIZE": "8",
        "KINJECT_DATA_DIR": str(data_dir),
        "KINJECT_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "kinject", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_as_from_a_terminal,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)


def _record(i: int, tag: str) -> Record:
    """A record long enough for several chunks, so a batch takes a moment to process."""
    text = " ".join(
        f"Logbook {tag} entry {i}.{n}: the keeper of beacon {i} on Tarn island recorded "
        f"{n + 3} ships passing the northern reef at {n + 5} knots in heavy weather."
        for n in range(12)
    )
    return Record(source_id=f"{tag}/{i}", kind="text", content=text.encode())


def _expected_chunks(records: list[Record]) -> dict[str, set[str]]:
    config = IngestConfig(ocr_engine="none")
    return {r.source_id: {c.chunk_id for c in ingest_record(r, config).chunks} for r in records}


class _Replica:
    """An in-process index replica: a TextIndex fed by an IndexMaterialiser thread."""

    def __init__(self, settings: KafkaSettings, bootstrap: str, directory: Path) -> None:
        self.index = TextIndex(directory, load_embedder("hash")).open()
        self.mat = IndexMaterialiser(settings, bootstrap, self.index)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.mat.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def chunk_ids(self) -> dict[str, set[str]]:
        assert self.index.docstore is not None
        out: dict[str, set[str]] = {}
        rows = self.index.docstore._db.execute("SELECT source_id, chunk_id FROM chunks")
        for source_id, chunk_id in rows.fetchall():
            out.setdefault(source_id, set()).add(chunk_id)
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.index.close()


def _end_offsets(settings: KafkaSettings, bootstrap: str, topic: str) -> int:
    from kafka import TopicPartition

    consumer = make_consumer(settings, bootstrap, None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def _committed(settings: KafkaSettings, bootstrap: str, topics: Topics) -> int:
    """Records the ingest group has committed on the records topic, all partitions."""
    group = topics.ingest_group
    admin = make_admin(settings, bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(m.offset for tp, m in offsets.items()
               if tp.topic == topics.records and m.offset >= 0)


def _chunk_events(settings: KafkaSettings, bootstrap: str, topic: str) -> Counter[str]:
    """How many chunk events each source has on the chunks topic."""
    expected = _end_offsets(settings, bootstrap, topic)
    consumer = make_consumer(settings, bootstrap, None, [topic])
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 20
    try:
        while sum(seen.values()) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                seen.update(json.loads(m.value)["source_id"] for m in batch)
    finally:
        consumer.close()
    return seen


def test_workers_killed_with_sigkill_lose_nothing_and_duplicate_nothing(
    kafka: KafkaSettings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.from_settings(kafka)
    # 9 waves of 40 for 5 kills mid-stream: a worker that drains its wave before the kill
    # (backlog 0, seen twice in one CI run on a fast machine) costs a wave, not the test
    records = [_record(i, "kill") for i in range(360)]
    expected = _expected_chunks(records)
    rng = random.Random(4)
    replica = _Replica(kafka, kafka_bootstrap, tmp_path / "index")
    producer = make_producer(kafka, kafka_bootstrap)
    log = tmp_path / "workers.log"
    waves = [records[i : i + 40] for i in range(0, len(records), 40)]
    ends: dict[int, int] = {}  # partition -> next offset, from the broker's acknowledgements
    kills: list[tuple[float, int]] = []  # (seconds into its work, records left uncommitted)
    started = time.monotonic()
    worker: subprocess.Popen[bytes] | None = None

    def send(wave: list[Record]) -> None:
        futures = [producer.send(topics.records, key=r.source_id.encode(),
                                 value=encode_record(r)) for r in wave]
        producer.flush()
        for f in futures:
            meta = f.get(10)
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

    try:
        while waves and len([k for k in kills if k[1] > 0]) < 5:
            send(waves.pop(0))  # queued while the next worker starts and joins
            before = _end_offsets(kafka, kafka_bootstrap, topics.chunks)
            worker = _start_worker(kafka, kafka_bootstrap, tmp_path / "data", log)
            until(
                lambda w=worker, b=before: (
                    w.poll() is not None
                    or _end_offsets(kafka, kafka_bootstrap, topics.chunks) > b
                ),
                60,
                "a restarted worker to produce chunks",
            )
            assert worker.poll() is None, log.read_text()[-3000:]
            delay = rng.uniform(0.0, 0.2)
            time.sleep(delay)
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(timeout=10) == -signal.SIGKILL
            left = sum(ends.values()) - _committed(kafka, kafka_bootstrap, topics)
            kills.append((delay, left))
        for wave in waves:
            send(wave)
        lives = log.read_text().count(_JOINED)
        worker = _start_worker(kafka, kafka_bootstrap, tmp_path / "data", log)
        until(lambda: replica.chunk_ids() == expected, 90, "every source in the index")
        # stopped with SIGTERM once it runs: a clean stop, exit 0
        until(lambda: log.read_text().count(_JOINED) > lives, 30, "the last worker to start")
        assert _stop(worker) == 0, log.read_text()[-3000:]
    finally:
        producer.close()
        if worker is not None and worker.poll() is None:
            worker.kill()
        replica.stop.set()
    elapsed = time.monotonic() - started
    mid_stream = [k for k in kills if k[1] > 0]
    assert len(mid_stream) >= 5, kills  # killed while records were still in flight

    # Exactly once in effect: every chunk of every source, once, each source with lineage.
    index = replica.index
    assert index.docstore is not None
    assert len(index) == sum(len(ids) for ids in expected.values()) == index.docstore.count()
    for rec in records:
        lineage = index.docstore.lineage(rec.source_id)
        assert lineage and set(lineage[-1]["chunk_ids"]) == expected[rec.source_id]
        assert all(entry["topic"] == topics.records for entry in lineage)
    hits = index.search("keeper of beacon 17 on Tarn island", 20)
    assert len({h.chunk_id for h in hits}) == len(hits)  # no chunk comes back twice
    # At least once on the wire: a batch sent but not committed is sent again.
    events = _chunk_events(kafka, kafka_bootstrap, topics.chunks)
    assert set(events) == set(expected)
    duplicated = sum(events.values()) - len(expected)
    assert duplicated >= 0
    assert _end_offsets(kafka, kafka_bootstrap, topics.dlq) == 0
    replica.close()
    sys.stderr.write(
        f"\nkill -9: {len(kills)} kills ({len(mid_stream)} mid-stream, backlog at kill "
        f"{[k[1] for k in kills]}), lost 0, {duplicated} duplicate chunk events on the "
        f"topic, 0 in the index, {elapsed:.1f} s\n"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _restart_diagnosis(settings: KafkaSettings, bootstrap: str, everything: set[str],
                       replica: _Replica | None, worker: subprocess.Popen[bytes] | None,
                       log: Path) -> str:
    """What a failure needs to be understood: where the records and chunk events are, what
    the replica reads, and where the worker is stuck (stacks dumped by SIGUSR1)."""
    from kafka import TopicPartition

    topics = Topics.from_settings(settings)
    assert replica is not None
    out = [f"missing {sorted(everything - set(replica.chunk_ids()))}"]
    try:
        probe = make_consumer(settings, bootstrap, None)
        for topic in (topics.records, topics.chunks):
            tps = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()]
            ends = sorted((tp.partition, n) for tp, n in probe.end_offsets(tps).items())
            out.append(f"{topic} ends {ends}")
        probe.close()
        out.append(f"ingest group committed {_committed(settings, bootstrap, topics)}")
        consumer = replica.mat._consumer
        if consumer is not None:
            out.append("replica positions " + str(sorted(
                (tp.partition, consumer.position(tp)) for tp in consumer.assignment())))
    except Exception as exc:  # a diagnosis must not hide the failure
        out.append(f"(diagnosis failed: {exc!r})")
    if worker is not None and worker.poll() is None:
        worker.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
    out.append("worker log: " + log.read_text()[-6000:])
    return "\n".join(out)


def test_records_accepted_across_a_broker_restart_are_all_indexed(tmp_path: Path) -> None:
    """The embedded broker forgets its log on restart. The outbox re-sends what was not
    confirmed, the worker process reconnects by itself, and the replica re-reads."""
    from kinject.stream.broker import EmbeddedBroker
    from kinject.stream.outbox import Outbox
    from kinject.stream.producer import Producer

    port = _free_port()  # both lives of the broker listen here, so clients can come back
    bootstrap = f"127.0.0.1:{port}"
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix="restart",
        partitions=2,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
    )
    broker = EmbeddedBroker(settings, port=port)
    broker.start()
    log = tmp_path / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    replica: _Replica | None = None
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        worker = _start_worker(settings, bootstrap, tmp_path / "data", log)
        replica = _Replica(settings, bootstrap, tmp_path / "index")
        producer = Producer(settings, bootstrap, outbox)
        old_cluster = producer.cluster_id
        wave_a = [_record(i, "a") for i in range(20)]
        wave_b = [_record(i, "b") for i in range(20)]
        wave_c = [_record(i, "c") for i in range(20)]
        for rec in wave_a:
            producer.publish(rec)
        producer.flush()
        until(
            lambda: {r.source_id for r in wave_a} <= set(replica.chunk_ids()),
            60,  # type: ignore[union-attr]
            "wave A indexed",
        )
        # The ingest group has committed wave A: the outbox lets it go.
        until(
            lambda: outbox.confirm(settings, bootstrap) >= 0 and len(outbox) == 0,
            20,
            "wave A confirmed",
        )
        for rec in wave_b:  # accepted, then the broker goes before anyone confirms them
            producer.publish(rec)
        producer.flush()
        broker.stop()
        broker.start()  # same port, a new cluster with an empty log
        assert producer.refresh_cluster_id() and producer.cluster_id != old_cluster
        assert outbox.republish(producer) == len(wave_b)
        for rec in wave_c:
            producer.publish(rec)
        producer.flush()
        everything = {r.source_id for r in wave_a + wave_b + wave_c}
        until(
            lambda: set(replica.chunk_ids()) == everything,
            90,  # type: ignore[union-attr]
            "waves A, B and C indexed",
            why=lambda: _restart_diagnosis(settings, bootstrap, everything, replica, worker, log),
        )
        expected = _expected_chunks(wave_a + wave_b + wave_c)
        assert replica.chunk_ids() == expected
        assert replica.index.docstore is not None  # every chunk stored once (copies hidden)
        assert replica.index.docstore.count() == sum(len(v) for v in expected.values())
        assert worker.poll() is None, "the worker died instead of reconnecting"
        until(
            lambda: outbox.confirm(settings, bootstrap) >= 0 and len(outbox) == 0,
            30,
            "waves B and C confirmed by the new cluster's ingest group",
        )
        producer.close()
        assert _stop(worker) == 0, log.read_text()[-3000:]
        assert "reconnecting" in log.read_text()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        if replica is not None:
            replica.close()
        outbox.close()
        broker.stop()
