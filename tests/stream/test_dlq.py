"""Dead letters: list, show and replay against real dead letters on the real broker."""

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_producer
from kinject.stream.dlq import read_dead_letters
from kinject.stream.dlq_store import open_dead_letter_store
from kinject.stream.events import encode_dead_letter
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.topics import Topics

pytestmark = pytest.mark.kafka
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points the root logger at CliRunner's stderr; put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture()
def env(kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    return {"KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers or "",
            "KINJECT_KAFKA__TOPIC_PREFIX": kafka.topic_prefix, "KINJECT_KAFKA__PARTITIONS": "2",
            "KINJECT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


def _letters(kafka: KafkaSettings) -> None:
    """Three dead letters as the ingest worker writes them (one on each key)."""
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka.bootstrap_servers or "")
    bad = [(b"kb/broken", b"{not json", "validate", "record value is not valid UTF-8 JSON"),
           (b"kb/pdf", json.dumps({"source_id": "kb/pdf", "kind": "pdf",
                                   "content_b64": "JVBERi0="}).encode(), "parse",
            "PDF has no pages"),
           (b"kb/bin", b"\x89PNG\x00\x01junk", "ocr", "cannot decode image")]
    for offset, (key, value, stage, reason) in enumerate(bad):
        producer.send(topics.dlq, key=key, value=encode_dead_letter(
            reason=reason, stage=stage, error_type="BadRecord", topic=topics.records,
            partition=0, offset=1000 + offset, key=key, value=value))
    producer.flush()
    producer.close()


def test_list_and_show_real_dead_letters(kafka: KafkaSettings, env: dict[str, str]) -> None:
    _letters(kafka)
    letters = read_dead_letters(kafka, kafka.bootstrap_servers or "")
    assert [d.source_id for d in letters] == ["kb/broken", "kb/pdf", "kb/bin"]
    result = runner.invoke(app, ["dlq", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 of 3 dead letter(s)" in result.stdout
    for text in ("kb/broken", "validate", "PDF has no pages", "kb/bin", "ocr"):
        assert text in result.stdout
    result = runner.invoke(app, ["dlq", "list", "--limit", "1"], env=env)
    assert "1 of 3" in result.stdout and "kb/bin" in result.stdout
    assert "kb/broken" not in result.stdout
    # Listing again copies nothing twice: the store knows each letter's position.
    result = runner.invoke(app, ["dlq", "list"], env=env)
    assert "3 of 3 dead letter(s)" in result.stdout
    with open_dead_letter_store(Path(env["KINJECT_DATA_DIR"])) as store:
        letters = store.latest()
    assert [d.source_id for d in letters] == ["kb/broken", "kb/pdf", "kb/bin"]
    pdf = letters[1]
    result = runner.invoke(app, ["dlq", "show", pdf.id], env=env)
    assert result.exit_code == 0, result.output
    assert '"reason": "PDF has no pages"' in result.stdout
    assert '"content_b64": "JVBERi0="' in result.stdout  # the original payload, decoded
    result = runner.invoke(app, ["dlq", "show", letters[2].id], env=env)
    assert "payload: 10 bytes of binary data" in result.stdout
    result = runner.invoke(app, ["dlq", "show", "7:99"], env=env)
    assert result.exit_code == 2 and "no dead letter 7:99" in result.stderr


def test_replay_republishes_and_a_failure_lands_in_the_dlq_again(
    kafka: KafkaSettings, env: dict[str, str], hash_embedder: HashEmbedder
) -> None:
    _letters(kafka)
    assert runner.invoke(app, ["dlq", "list"], env=env).exit_code == 0
    with open_dead_letter_store(Path(env["KINJECT_DATA_DIR"])) as store:
        broken = store.latest()[0]
    result = runner.invoke(app, ["dlq", "replay"], env=env)
    assert result.exit_code == 2 and "--id ID" in result.stderr
    worker = IngestWorker(kafka, kafka.bootstrap_servers or "", IngestConfig(ocr_engine="none"),
                          hash_embedder, group_id=f"{kafka.topic_prefix}-ingest")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        result = runner.invoke(app, ["dlq", "replay", "--id", broken.id], env=env)
        assert result.exit_code == 0, result.output
        assert f"replayed 1 dead letter(s) to {kafka.topic_prefix}.records" in result.stdout
        deadline = time.monotonic() + 30
        while len(letters := read_dead_letters(kafka, kafka.bootstrap_servers or "")) < 4:
            assert time.monotonic() < deadline, "the replayed record did not fail again"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=10)
    again = letters[-1]
    assert again.value == b"{not json" and again.source_id == "kb/broken"
    assert again.source_topic == f"{kafka.topic_prefix}.records"
    # --all replays what was not replayed yet: the broken record's first letter was.
    result = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
    assert result.exit_code == 0 and "replayed 3 dead letter(s)" in result.stdout
    result = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
    assert result.exit_code == 0 and "replayed 0 dead letter(s)" in result.stdout
    result = runner.invoke(app, ["dlq", "replay", "--all", "--include-replayed"], env=env)
    assert result.exit_code == 0 and "replayed 4 dead letter(s)" in result.stdout


def test_replaying_a_letter_whose_bytes_were_not_kept_deletes_nothing(
    kafka: KafkaSettings, env: dict[str, str], hash_embedder: HashEmbedder
) -> None:
    """A record over twice the size limit is dead-lettered without its bytes. Replaying that
    letter used to send its key with no value: a Kafka tombstone, which the worker reads as
    a delete of the source, so the good version already indexed vanished."""
    from _messages import read_json

    from kinject.ingest.envelope import encode_record
    from kinject.types import Record

    topics = Topics.from_settings(kafka)
    bootstrap = kafka.bootstrap_servers or ""
    data_dir = Path(env["KINJECT_DATA_DIR"])
    good = encode_record(Record("kb/big", kind="text", content=b"The quay opens at six."))
    huge = encode_record(Record("kb/big", kind="text", content=b"lighthouse " * 1000))
    producer = make_producer(kafka, bootstrap)
    for value in (good, huge):
        producer.send(topics.records, key=b"kb/big", value=value)
    producer.flush()
    producer.close()
    store = open_dead_letter_store(data_dir)
    worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), hash_embedder,
                          group_id=topics.ingest_group, max_record_bytes=4000,
                          dlq_store=store, record_timeout_s=0)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while worker.processed < 2:
            assert time.monotonic() < deadline, "the worker did not read both records"
            time.sleep(0.1)
        [letter] = store.latest()
        assert letter.value is None and "too large to keep" in letter.reason
        result = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
        assert result.exit_code == 0, result.output
        assert "replayed 0 dead letter(s)" in result.stdout
        # A newer version of the source, on the same partition after anything the replay
        # sent: once the worker has read it, a tombstone the replay sent was read before it.
        producer = make_producer(kafka, bootstrap)
        producer.send(topics.records, key=b"kb/big", value=encode_record(
            Record("kb/big", kind="text", content=b"The quay opens at seven.")))
        producer.flush()
        producer.close()
        while worker.processed < 3:
            assert time.monotonic() < deadline, "the worker did not read the newer version"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
        store.close()
    events = read_json(kafka, bootstrap, topics.chunks, 2, timeout_s=10)
    assert [e["op"] for e in events] == ["upsert", "upsert"], "the replay deleted the source"
    # The letter is still there to act on (publish the source again, smaller).
    with open_dead_letter_store(data_dir) as store:
        assert [d.replayed_at for d in store.latest()] == [None]


def test_replay_skips_a_letter_older_than_the_sources_delete(
    kafka: KafkaSettings, env: dict[str, str], hash_embedder: HashEmbedder
) -> None:
    # A record dead-lettered for a passing reason (over the limit of the worker of that
    # day), then the source deleted: `dlq replay --all` re-published the old record after
    # the delete, and the deleted source came back.
    from _running import Running
    from _wait import until
    from kinject.index.text_index import TextIndex
    from kinject.ingest.envelope import encode_record
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.types import Record

    bootstrap = kafka.bootstrap_servers or ""
    index = TextIndex(Path(env["KINJECT_DATA_DIR"]) / "index", hash_embedder).open()
    worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), hash_embedder,
                          max_record_bytes=600, record_timeout_s=0)
    loops = Running(worker.run, IndexMaterialiser(kafka, bootstrap, index).run)
    producer = make_producer(kafka, bootstrap)
    try:
        for record in (Record("kb/tide", kind="text", content=b"High tide at the quay: 6 am."),
                       Record("kb/tide", kind="text", content=b"Low tide at noon. " * 40),
                       Record("kb/tide", op="delete")):
            producer.send(Topics.from_settings(kafka).records, key=b"kb/tide",
                          value=encode_record(record))
        producer.flush()
        until(lambda: [e["op"] for e in index.docstore.lineage("kb/tide")]  # type: ignore
              == ["upsert", "delete"], what="the upsert and the delete applied")
        assert worker.dead_letters == 1
    finally:
        producer.close()
        loops.stop()
        index.close()
    result = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
    assert result.exit_code == 0, result.output
    assert "replayed 0 dead letter(s)" in result.stdout
    assert "kb/tide" in result.stderr and "delete" in result.stderr
