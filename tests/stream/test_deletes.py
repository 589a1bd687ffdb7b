"""Deletes through the real broker: op=delete and a Kafka tombstone remove a source's chunks
and images from the replica, record the delete (with its Kafka position) in lineage, and
bring back what the deleted source was hiding (a duplicate, an older conflicting row)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from _running import Running
from _wait import until
from kinject.config import KafkaSettings, load_settings
from kinject.index.clip_embedder import ClipEmbedder, make_clip_embedder
from kinject.index.conflicts import store_conflicts
from kinject.index.embedders import HashEmbedder
from kinject.index.image_index import ImageIndex
from kinject.index.text_index import TextIndex
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_producer
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import ensure_topics
from kinject.types import Record

pytestmark = pytest.mark.kafka

GUIDE = (
    "The oldest lighthouse on the Lantern Isles is the Fennick light on Wisk Island, first "
    "lit in 1859 and kept by the Calloway family for three generations. Senna Calloway, "
    "the last keeper, wrote the logbooks that the Guild of Lamplighters still keeps."
)


def _png() -> bytes:
    img = Image.new("RGB", (96, 64), (30, 60, 200))
    ImageDraw.Draw(img).ellipse((20, 10, 60, 50), fill=(240, 40, 40))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def clip(tiny_clip: dict[str, str]) -> ClipEmbedder:
    settings = load_settings(models=tiny_clip)
    embedder = make_clip_embedder(settings.models.clip_model, settings.models.clip_checkpoint)
    assert embedder is not None
    embedder.warm_up()
    return embedder


@pytest.fixture()
def road(kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path: Path,
         hash_embedder: HashEmbedder, clip: ClipEmbedder) -> Iterator[dict[str, Any]]:
    prefix = "del" + str(abs(hash(request.node.nodeid)) % 10**8)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                          partitions=2, session_timeout_ms=2000)
    topics = ensure_topics(kafka, kafka_bootstrap)
    index = TextIndex(tmp_path / "replica", hash_embedder).open()
    images = ImageIndex(tmp_path / "replica", clip).open()
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, clip=clip)
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index, images=images)
    loops = Running(worker.run, mat.run)
    until(worker.ready.is_set, what="the worker to join its group")
    producer = make_producer(kafka, kafka_bootstrap)

    def send(key: str, value: bytes | None) -> tuple[str, int, int]:
        meta = producer.send(topics.records, key=key.encode(), value=value).get(10)
        return meta.topic, meta.partition, meta.offset

    def publish(record: Record) -> tuple[str, int, int]:
        return send(record.source_id, encode_record(record))

    yield {"index": index, "images": images, "send": send, "publish": publish,
           "topics": topics}
    loops.stop()
    producer.close()
    images.close()
    index.close()


def _stored(index: TextIndex, source_id: str) -> int:
    assert index.docstore is not None
    with index.docstore.transaction() as db:
        return int(db.execute("SELECT COUNT(*) FROM chunks WHERE source_id=?",
                              (source_id,)).fetchone()[0])


def _found(index: TextIndex, query: str) -> set[str]:
    return {h.source_id for h in index.search(query, 20)}


def test_delete_and_tombstone_remove_chunks_and_images_and_are_in_lineage(
    road: dict[str, Any]
) -> None:
    index: TextIndex = road["index"]
    images: ImageIndex = road["images"]
    assert index.docstore is not None and images.docstore is not None
    road["publish"](Record("kb/guide", kind="text", content=GUIDE.encode(), ts=1.0))
    road["publish"](Record("kb/photo", kind="image", content=_png(),
                           meta={"caption": "The red lamp of the Fennick light at dusk."}))
    until(lambda: {"kb/guide", "kb/photo"} <= _found(index, "Fennick light lamp"),
          what="both sources searchable")
    until(lambda: images.docstore is not None and images.docstore.image_count("kb/photo") == 1,
          what="the image in the image index")
    # a copy of the guide from another source: stored, not searched while the guide is there
    road["publish"](Record("kb/mirror", kind="text", content=GUIDE.upper().encode(), ts=2.0))
    until(lambda: _stored(index, "kb/mirror") == 1, what="the copy stored")
    assert "kb/mirror" not in _found(index, "Fennick light Calloway keeper")

    deleted_at = road["publish"](Record("kb/guide", op="delete"))  # op=delete
    tombstone_at = road["send"]("kb/photo", None)  # a Kafka tombstone
    until(lambda: _stored(index, "kb/guide") == 0 and _stored(index, "kb/photo") == 0,
          what="both sources' chunks removed")
    until(lambda: images.docstore is not None and images.docstore.image_count("kb/photo") == 0,
          what="the image removed")
    assert len(images) == 0
    found = _found(index, "Fennick light Calloway keeper lamp")
    assert "kb/guide" not in found and "kb/photo" not in found
    assert "kb/mirror" in found  # the copy the guide was hiding is searchable again

    for source_id, position in (("kb/guide", deleted_at), ("kb/photo", tombstone_at)):
        events = index.docstore.lineage(source_id)
        assert [e["op"] for e in events] == ["upsert", "delete"]
        last = events[-1]
        assert (last["topic"], last["partition"], last["offset"]) == position
        assert last["chunk_ids"] == []
        assert events[0]["chunk_ids"]  # what the upsert had made, still on record

    # A replayed or repeated delete changes nothing but the record of it.
    road["publish"](Record("kb/guide", op="delete"))
    until(lambda: len(index.docstore.lineage("kb/guide")) == 3,  # type: ignore[union-attr]
          what="the second delete recorded")
    assert _stored(index, "kb/mirror") == 1 and "kb/mirror" in _found(index, "Fennick light")


def test_deleting_the_newer_of_two_conflicting_sources_brings_the_older_row_back(
    road: dict[str, Any]
) -> None:
    index: TextIndex = road["index"]
    assert index.docstore is not None
    road["publish"](Record("census/2020.csv", kind="csv", ts=1_600_000_000.0,
                           content=b"city,population\nGullspire,41000\n"))
    road["publish"](Record("census/2023.csv", kind="csv", ts=1_700_000_000.0,
                           content=b"city,population\nGullspire,43500\n"))

    def texts() -> list[str]:
        return [h.text for h in index.search("Gullspire population", 10)]

    until(lambda: any("43500" in t for t in texts()) and not any("41000" in t for t in texts())
          and len(store_conflicts(index.docstore)) == 1,  # type: ignore[arg-type]
          what="the newer row searched, the conflict listed")
    road["send"]("census/2023.csv", None)
    until(lambda: any("41000" in t for t in texts()), what="the older row back")
    assert not any("43500" in t for t in texts())
    assert store_conflicts(index.docstore) == []
    assert index.docstore.lineage("census/2023.csv")[-1]["op"] == "delete"


def test_an_image_upserted_then_deleted_in_one_batch_stays_deleted(
    kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path: Path,
    hash_embedder: HashEmbedder, clip: ClipEmbedder
) -> None:
    # The worker sent a batch's image events after all its text events: the delete of a
    # source (or a new version without images) that followed its image upsert in the same
    # batch reached the replica before that image, which came back to life.
    prefix = "del1" + str(abs(hash(request.node.nodeid)) % 10**8)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                          partitions=2, session_timeout_ms=2000)
    topics = ensure_topics(kafka, kafka_bootstrap)
    producer = make_producer(kafka, kafka_bootstrap)
    caption = {"caption": "The red lamp of the Fennick light at dusk."}
    for record in (Record("kb/photo", kind="image", content=_png(), meta=caption),
                   Record("kb/photo", op="delete"),
                   Record("kb/chart", kind="image", content=_png(), meta=caption),
                   Record("kb/chart", kind="text", content=GUIDE.encode())):  # no image now
        producer.send(topics.records, key=record.source_id.encode(), value=encode_record(record))
    producer.flush()
    producer.close()
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, clip=clip)  # started after: one batch holds all four
    worker.start()
    try:
        until(lambda: worker.poll_once() > 0 and worker.processed == 4 or worker.processed == 4,
              what="the four records read")
    finally:
        worker.close()
    with TextIndex(tmp_path / "replica", hash_embedder) as index, \
            ImageIndex(tmp_path / "replica", clip) as images:
        mat = IndexMaterialiser(kafka, kafka_bootstrap, index, images=images)
        mat.start()
        try:
            until(lambda: mat.poll_once() > 0 and _stored(index, "kb/chart") == 1
                  or _stored(index, "kb/chart") == 1, what="the replica caught up")
            mat.poll_once(500)
        finally:
            mat.close()
        assert images.docstore is not None
        assert images.docstore.image_count("kb/photo") == 0
        assert images.docstore.image_count("kb/chart") == 0 and len(images) == 0
        assert _stored(index, "kb/photo") == 0
