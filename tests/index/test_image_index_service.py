"""KinjectService.search_images: CLIP when configured, captions and OCR text when not."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _image_helpers import ingest, png

from kinject.config import Settings, load_settings
from kinject.errors import ConfigError
from kinject.service import KinjectService
from kinject.types import Record

RECORDS = [
    Record(source_id="pics/ferry", kind="image", content=png(1),
           meta={"caption": "The red ferry Osprey leaving Greyhaven pier"}),
    Record(source_id="pics/mill", kind="image", content=png(2),
           meta={"caption": "Windmill on the Tarrow dunes at sunset"}),
    Record(source_id="notes/ferry", kind="text",
           content=b"The ferry timetable changes in October."),
]


def _settings(data_dir: Path, **models: str) -> Settings:
    return load_settings(data_dir=data_dir, models={"embedder": "hash:64", "embedder_zh": "none",
                                                    **models})


def test_without_clip_images_are_found_through_their_captions(data_dir: Path) -> None:
    with KinjectService(_settings(data_dir)) as svc:
        assert svc.images is None
        ingest(svc, RECORDS)
        hits = svc.search_images(query_text="Osprey ferry Greyhaven pier", k=3)
        assert hits and hits[0].source_id == "pics/ferry"
        assert hits[0].caption == "The red ferry Osprey leaving Greyhaven pier"
        assert "notes/ferry" not in {h.source_id for h in hits}  # text sources are not images
        assert len({h.image_id for h in hits}) == len(hits)
        with pytest.raises(ConfigError, match="KINJECT_MODELS__CLIP_CHECKPOINT"):
            svc.search_images(image_bytes=RECORDS[0].content)


def test_with_clip_images_are_searched_by_image_and_by_text(
    data_dir: Path, tiny_clip: dict[str, str]
) -> None:
    with KinjectService(_settings(data_dir, **tiny_clip)) as svc:
        assert svc.images is not None
        ingest(svc, RECORDS)
        assert len(svc.images) == 2
        for record in RECORDS[:2]:
            hits = svc.search_images(image_bytes=record.content, k=2)
            assert [h.source_id for h in hits][0] == record.source_id
            assert hits[0].caption == record.meta["caption"]
        hits = svc.search_images(query_text="a windmill", k=5)
        assert {h.source_id for h in hits} == {"pics/ferry", "pics/mill"}
        assert all(h.caption for h in hits)
        with pytest.raises(ValueError):
            svc.search_images()
        with pytest.raises(ValueError):
            svc.search_images(query_text="x", image_bytes=b"y")
    # a restart of the service finds the image index as it was
    with KinjectService(_settings(data_dir, **tiny_clip)) as svc:
        assert svc.images is not None and len(svc.images) == 2
        assert svc.search_images(image_bytes=RECORDS[1].content, k=1)[0].source_id == "pics/mill"


def test_the_api_searches_images_by_text_and_by_image(
    data_dir: Path, tiny_clip: dict[str, str], tmp_path: Path
) -> None:
    import base64

    from fastapi.testclient import TestClient

    from kinject.api.app import create_app

    with KinjectService(_settings(data_dir, **tiny_clip)) as svc, \
            TestClient(create_app(svc)) as client:
        ingest(svc, RECORDS)
        like = client.post("/v1/search/images",
                           json={"image_b64": base64.b64encode(RECORDS[1].content).decode(),
                                 "k": 2})
        assert like.status_code == 200, like.text
        hits = like.json()["hits"]
        assert hits[0]["source_id"] == "pics/mill"
        assert hits[0]["caption"] == RECORDS[1].meta["caption"]
        assert base64.b64decode(hits[0]["thumbnail_b64"])[:2] == b"\xff\xd8"  # a JPEG
        by_text = client.get("/v1/search/images", params={"q": "a windmill", "k": 5}).json()
        assert {h["source_id"] for h in by_text["hits"]} == {"pics/ferry", "pics/mill"}
        bad = client.post("/v1/search/images", json={"image_b64": "not base64!"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    # without CLIP: text still finds images by caption; an image query says what to set
    with KinjectService(_settings(tmp_path / "plain")) as svc, \
            TestClient(create_app(svc)) as client:
        ingest(svc, RECORDS)
        found = client.get("/v1/search/images", params={"q": "Osprey ferry Greyhaven"}).json()
        assert found["hits"][0]["source_id"] == "pics/ferry"
        off = client.post("/v1/search/images",
                          json={"image_b64": base64.b64encode(RECORDS[0].content).decode()})
        assert off.status_code == 400
        assert "KINJECT_MODELS__CLIP_CHECKPOINT" in off.json()["error"]["message"]


def test_the_api_refuses_bytes_that_are_no_image(data_dir: Path, tiny_clip: dict[str, str]
                                                  ) -> None:
    import base64

    from fastapi.testclient import TestClient

    from kinject.api.app import create_app

    with KinjectService(_settings(data_dir, **tiny_clip)) as svc, \
            TestClient(create_app(svc)) as client:
        r = client.post("/v1/search/images",
                        json={"image_b64": base64.b64encode(b"GIF89a not really").decode()})
        assert r.status_code == 400 and "not an image" in r.json()["error"]["message"]


def test_an_image_thumbnail_is_served_by_its_id_or_the_404_says_why_not(
    data_dir: Path, tiny_clip: dict[str, str], tmp_path: Path
) -> None:
    """The page shows an image hit's thumbnail (GET /v1/images/{id}/thumbnail); a server
    without the CLIP image index keeps none, and the 404 says so (the page shows that)."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from kinject.api.app import create_app

    with KinjectService(_settings(data_dir, **tiny_clip)) as svc, \
            TestClient(create_app(svc)) as client:
        image_of = ingest(svc, RECORDS)
        hit = client.get("/v1/search", params={"q": "Windmill Tarrow dunes"}).json()["hits"][0]
        assert hit["meta"]["image_id"] == image_of["pics/mill"]
        r = client.get(f"/v1/images/{hit['meta']['image_id']}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(r.content)) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (128, 96)  # 160x120, scaled
        gone = client.get("/v1/images/nosuchimage/thumbnail")
        assert gone.status_code == 404 and "no image nosuchimage" in gone.json()["error"]["message"]
    with KinjectService(_settings(tmp_path / "plain")) as svc, \
            TestClient(create_app(svc)) as client:
        image_of = ingest(svc, RECORDS)
        r = client.get(f"/v1/images/{image_of['pics/mill']}/thumbnail")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert "only in the CLIP image index" in r.json()["error"]["message"]
        assert "KINJECT_MODELS__CLIP_CHECKPOINT" in r.json()["error"]["message"]
