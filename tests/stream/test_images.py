"""Images on the road: records -> ingest worker (CLIP) -> kinject.chunks -> a replica."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from _running import Running
from _wait import until
from kinject.config import KafkaSettings, load_settings
from kinject.index.clip_embedder import ClipEmbedder, make_clip_embedder
from kinject.index.embedders import HashEmbedder
from kinject.index.image_index import ImageIndex
from kinject.index.text_index import TextIndex
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_consumer, make_producer
from kinject.stream.events import decode_image_update, is_image_event
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics, ensure_topics
from kinject.types import Record

pytestmark = pytest.mark.kafka


def _picture(seed: int, size: tuple[int, int] = (320, 240), noise: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(x) for x in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, 260)), int(rng.integers(0, 180))
        box = (x0, y0, x0 + int(rng.integers(30, 90)), y0 + int(rng.integers(30, 90)))
        fill = tuple(int(x) for x in rng.integers(0, 256, 3))
        (draw.rectangle if rng.integers(0, 2) else draw.ellipse)(box, fill=fill)
    if noise:  # photo-like grain: the PNG weighs a few hundred KB
        grain = rng.integers(-40, 40, (size[1], size[0], 3))
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def clip(tiny_clip: dict[str, str]) -> ClipEmbedder:
    settings = load_settings(models=tiny_clip)  # the same path as a user's settings
    embedder = make_clip_embedder(settings.models.clip_model, settings.models.clip_checkpoint)
    assert embedder is not None
    embedder.warm_up()
    return embedder


@pytest.fixture()
def road(kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path: Path,
         hash_embedder: HashEmbedder, clip: ClipEmbedder) -> Iterator[dict[str, Any]]:
    prefix = "img" + str(abs(hash(request.node.nodeid)) % 10**8)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                          partitions=2, session_timeout_ms=2000)
    ensure_topics(kafka, kafka_bootstrap)
    directory = tmp_path / "replica"
    index = TextIndex(directory, hash_embedder).open()
    images = ImageIndex(directory, clip).open()
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, group_id=f"{prefix}-ingest", clip=clip)
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index, images=images)
    loops = Running(worker.run, mat.run)
    until(worker.ready.is_set)
    producer = make_producer(kafka, kafka_bootstrap)

    def publish(*records: Record) -> None:
        for r in records:
            producer.send(Topics.from_settings(kafka).records, key=r.source_id.encode(),
                          value=encode_record(r))
        producer.flush()

    road = {"kafka": kafka, "index": index, "images": images, "publish": publish,
            "loops": loops, "directory": directory, "mat": mat}
    yield road
    loops.stop()
    producer.close()
    images.close()
    index.close()


def test_a_captioned_image_is_found_by_image_search_in_the_replica(
    road: dict[str, Any], kafka_bootstrap: str, clip: ClipEmbedder, hash_embedder: HashEmbedder
) -> None:
    images: ImageIndex = road["images"]
    photos = {f"photos/{n}.png": _picture(n, noise=n == 0) for n in range(4)}
    captions = dict(zip(photos, ["the harbour crane at noon", "fishing boats in fog",
                                 "a lighthouse keeper's cottage", ""], strict=True))
    # photos/3.png has no caption and no OCR text: only CLIP finds it
    road["publish"](*[Record(source_id=sid, kind="image", content=data,
                             meta={"caption": captions[sid]} if captions[sid] else {})
                      for sid, data in photos.items()],
                    Record(source_id="notes/crane", kind="text",
                           content=b"The harbour crane lifts 40 tonnes."))
    until(lambda: len(images) == 4)

    for sid, data in photos.items():
        hits = images.search_image(data, k=4)
        assert hits[0].source_id == sid and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].caption == captions[sid]
        assert hits[0].thumbnail is not None and hits[0].meta["width"] == 320
    # a resized copy (say, a phone's preview) finds the original
    small = Image.open(io.BytesIO(photos["photos/1.png"])).resize((160, 120))
    buf = io.BytesIO()
    small.save(buf, format="JPEG")
    assert images.search_image(buf.getvalue(), k=1)[0].source_id == "photos/1.png"
    # text -> image runs and carries the captions
    hits = images.search_text("harbour crane", k=4)
    assert {h.source_id: h.caption for h in hits} == captions
    # the caption is indexed as text too
    until(lambda: "photos/2.png" in {h.source_id for h in
                                      road["index"].search("lighthouse keeper cottage", 5)})

    # the event on kinject.chunks: vectors, caption, a thumbnail; never the full image
    topics = Topics.from_settings(road["kafka"])
    consumer = make_consumer(road["kafka"], kafka_bootstrap, None, [topics.chunks],
                             consumer_timeout_ms=3000)
    values = [m.value for m in consumer if is_image_event(m.value)]
    consumer.close()
    events = [decode_image_update(v) for v in values]
    assert sorted(e.source_id for e in events) == sorted(photos)
    event = next(e for e in events if e.source_id == "photos/0.png")
    assert event.vectors.shape == (1, clip.dim) and event.model == clip.name
    assert event.images[0].caption == captions["photos/0.png"]
    assert event.record_position is not None and event.record_position[0] == topics.records
    thumb = event.images[0].thumbnail
    assert thumb is not None and max(Image.open(io.BytesIO(thumb)).size) <= 128
    biggest = max(len(v) for v in values)
    assert len(photos["photos/0.png"]) > 100_000 and biggest < 20_000


def test_deleting_a_source_removes_its_images_and_a_restart_keeps_the_rest(
    road: dict[str, Any], clip: ClipEmbedder, hash_embedder: HashEmbedder
) -> None:
    images: ImageIndex = road["images"]
    a, b = _picture(10), _picture(11)
    road["publish"](Record(source_id="pics/a", kind="image", content=a,
                           meta={"caption": "lighthouse at night"}),
                    Record(source_id="pics/b", kind="image", content=b,
                           meta={"caption": "fishing boats"}))
    until(lambda: len(images) == 2)
    road["publish"](Record(source_id="pics/a", op="delete"))
    until(lambda: len(images) == 1)
    assert [h.source_id for h in images.search_image(a, k=5)] == ["pics/b"]
    assert images.docstore is not None and images.docstore.image_count("pics/a") == 0
    until(lambda: "pics/a" not in {h.source_id for h in road["index"].search("lighthouse", 5)})

    # republished as plain text: the old image of the source goes
    road["publish"](Record(source_id="pics/b", kind="text", content=b"Boats leave at six."))
    until(lambda: len(images) == 0)
    road["publish"](Record(source_id="pics/b", kind="image", content=b,
                           meta={"caption": "fishing boats again"}))
    until(lambda: len(images) == 1)

    # stop the replica; a new one on the same directory has the image index at once
    road["loops"].stop()
    images.close()
    with ImageIndex(road["directory"], clip) as reopened:
        hits = reopened.search_image(b, k=1)
        assert hits[0].source_id == "pics/b" and hits[0].caption == "fishing boats again"
    road["images"] = ImageIndex(road["directory"], clip).open()  # closed by the fixture


def test_replicas_sync_images_with_clip_and_skip_them_without(
    road: dict[str, Any], kafka_bootstrap: str, tiny_clip: dict[str, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    from kinject.service import KinjectService

    photo = _picture(21)
    road["publish"](Record(source_id="pics/quay", kind="image", content=photo,
                           meta={"caption": "cranes on the north quay"}))
    until(lambda: len(road["images"]) == 1)

    def settings(name: str, **models: str) -> Any:
        return load_settings(
            data_dir=tmp_path / name,
            kafka={"bootstrap_servers": kafka_bootstrap,
                   "topic_prefix": road["kafka"].topic_prefix, "partitions": 2},
            models={"embedder": "hash:64", "embedder_zh": "none", **models})

    with KinjectService(settings("with-clip", **tiny_clip)) as svc:
        svc.sync(idle_s=1.0)
        hits = svc.search_images(image_bytes=photo, k=1)
        assert hits[0].source_id == "pics/quay" and hits[0].caption == "cranes on the north quay"
    caplog.clear()
    with KinjectService(settings("text-only")) as svc:
        svc.sync(idle_s=1.0)
        assert svc.images is None
        hits = svc.search_images(query_text="cranes north quay", k=1)
        assert hits[0].source_id == "pics/quay" and hits[0].caption == "cranes on the north quay"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # image events: skipped


def test_a_replica_given_clip_later_embeds_the_images_it_skipped(
    road: dict[str, Any], kafka_bootstrap: str, tiny_clip: dict[str, str], tmp_path: Path
) -> None:
    # A replica without CLIP committed its offsets past the image events; when the user
    # then set KINJECT_MODELS__CLIP_CHECKPOINT, image search found nothing it had skipped.
    from kinject.service import KinjectService

    photo = _picture(22)
    road["publish"](Record(source_id="pics/slip", kind="image", content=photo,
                           meta={"caption": "a slipway at low tide"}))
    until(lambda: len(road["images"]) == 1)
    models = {"embedder": "hash:64", "embedder_zh": "none"}
    kafka = {"bootstrap_servers": kafka_bootstrap, "topic_prefix": road["kafka"].topic_prefix,
             "partitions": 2}
    with KinjectService(load_settings(data_dir=tmp_path / "r", kafka=kafka,
                                      models=models)) as svc:
        svc.sync(idle_s=1.0)
        assert svc.images is None
    with KinjectService(load_settings(data_dir=tmp_path / "r", kafka=kafka,
                                      models={**models, **tiny_clip})) as svc:
        svc.sync(idle_s=1.0)
        hits = svc.search_images(image_bytes=photo, k=1)
        assert [h.source_id for h in hits] == ["pics/slip"]
        assert hits[0].caption == "a slipway at low tide"
        assert len(svc.search("slipway low tide", k=5)) >= 1  # text unharmed by the re-read
        # the re-read fed the image index only: the source's history is not doubled
        assert [e["op"] for e in svc.lineage("pics/slip")["events"]] == ["upsert"]


def test_a_replica_with_clip_embeds_images_a_worker_without_clip_ingested(
    kafka_bootstrap: str, hash_embedder: HashEmbedder, tiny_clip: dict[str, str],
    tmp_path: Path
) -> None:
    # An ingest worker without CLIP sent no image events at all: a serving replica with CLIP
    # found its images by caption only, never by image, until they were published again.
    from kinject.service import KinjectService

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="img-noclip",
                          partitions=2, session_timeout_ms=2000)
    ensure_topics(kafka, kafka_bootstrap)
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder, group_id="img-noclip-ingest", clip=None)
    photos = {f"pics/{n}": _picture(30 + n) for n in range(3)}
    producer = make_producer(kafka, kafka_bootstrap)
    with Running(worker.run):
        until(worker.ready.is_set)
        for n, (sid, data) in enumerate(photos.items()):
            producer.send(Topics.from_settings(kafka).records, key=sid.encode(),
                          value=encode_record(Record(source_id=sid, kind="image", content=data,
                                                     meta={"caption": f"harbour view {n}"})))
        producer.flush()
        until(lambda: worker.processed == len(photos))
    producer.close()

    # on kinject.chunks: the images with their captions and thumbnails, without vectors
    consumer = make_consumer(kafka, kafka_bootstrap, None,
                             [Topics.from_settings(kafka).chunks], consumer_timeout_ms=3000)
    events = [decode_image_update(m.value) for m in consumer if is_image_event(m.value)]
    consumer.close()
    assert sorted(e.source_id for e in events) == sorted(photos)
    assert all(e.vectors.shape == (1, 0) and e.images[0].thumbnail for e in events)

    models = {"embedder": "hash:64", "embedder_zh": "none", **tiny_clip}
    settings = load_settings(data_dir=tmp_path / "replica", models=models, kafka={
        "bootstrap_servers": kafka_bootstrap, "topic_prefix": "img-noclip", "partitions": 2})
    with KinjectService(settings) as svc:
        svc.sync(idle_s=1.0)
        assert svc.images is not None and len(svc.images) == len(photos)
        for n, (sid, data) in enumerate(photos.items()):
            hits = svc.search_images(image_bytes=data, k=1)
            assert [h.source_id for h in hits] == [sid]
            assert hits[0].caption == f"harbour view {n}" and hits[0].thumbnail is not None
