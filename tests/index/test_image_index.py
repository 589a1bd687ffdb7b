"""ImageIndex: CLIP vectors in FAISS, rows in the docstore; image and text queries."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kinject.config import load_settings
from kinject.index.changes import SourceUpdate
from kinject.index.clip_embedder import ClipEmbedder, make_clip_embedder
from kinject.index.image_index import ImageIndex, ImageUpdate
from kinject.types import ImageItem, content_hash


def shape_image(seed: int, size: tuple[int, int] = (200, 160)) -> Image.Image:
    """A distinct picture: a background colour, four random shapes and a label."""
    rng = np.random.default_rng(seed)
    colour = tuple(int(x) for x in rng.integers(0, 256, 3))
    img = Image.new("RGB", size, colour)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, 150)), int(rng.integers(0, 110))
        box = [x0, y0, x0 + int(rng.integers(20, 60)), y0 + int(rng.integers(20, 60))]
        fill = tuple(int(x) for x in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle(box, fill=fill)  # type: ignore[arg-type]
        elif kind == 1:
            draw.ellipse(box, fill=fill)  # type: ignore[arg-type]
        else:
            draw.line(box, fill=fill, width=5)  # type: ignore[arg-type]
    draw.text((8, 8), f"picture {seed}", fill=(0, 0, 0))
    return img


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def item(source: str, data: bytes, caption: str = "", ocr: str = "") -> ImageItem:
    return ImageItem(content_hash(source, data), source, data, caption=caption, ocr_text=ocr,
                     meta={"filename": f"{source}.png"})


N = 8


@pytest.fixture(scope="module")
def clip(tiny_clip: dict[str, str]) -> ClipEmbedder:
    settings = load_settings(models=tiny_clip)
    embedder = make_clip_embedder(settings.models.clip_model, settings.models.clip_checkpoint)
    assert embedder is not None
    embedder.warm_up()
    return embedder


@pytest.fixture()
def index(tmp_path: Path, clip: ClipEmbedder) -> Iterator[ImageIndex]:
    with ImageIndex(tmp_path / "index", clip) as idx:
        yield idx


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [shape_image(seed) for seed in range(N)]


def _fill(index: ImageIndex, pictures: list[Image.Image]) -> None:
    for n, pic in enumerate(pictures):
        update = index.embed([item(f"img/{n}", png(pic), caption=f"caption of picture {n}",
                                   ocr=f"picture {n}")])
        assert update is not None
        index.upsert(update)


def test_an_image_finds_itself_and_its_resized_and_cropped_copies(
    index: ImageIndex, pictures: list[Image.Image]
) -> None:
    _fill(index, pictures)
    assert len(index) == N
    for n, pic in enumerate(pictures):
        w, h = pic.size
        same = index.search_image(png(pic), k=3)
        assert same[0].source_id == f"img/{n}" and same[0].score == pytest.approx(1.0, abs=1e-4)
        assert same[0].caption == f"caption of picture {n}" and same[0].ocr_text == f"picture {n}"
        copies = {
            "resized": pic.resize((w // 2, h // 2)),
            "centre crop": pic.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
            "corner crop": pic.crop((0, 0, int(w * 0.8), int(h * 0.8))),
        }
        for what, copy in copies.items():
            hits = index.search_image(png(copy), k=N)
            assert len(hits) == N
            assert hits[0].source_id == f"img/{n}", f"{what} copy of picture {n}: {hits[:3]}"
            assert hits[0].score > hits[1].score


def test_text_queries_return_images_with_their_caption_ocr_text_and_thumbnail(
    index: ImageIndex, pictures: list[Image.Image]
) -> None:
    _fill(index, pictures[:4])
    hits = index.search_text("a harbour at dawn", k=3)
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        n = int(hit.source_id.split("/")[1])
        assert hit.caption == f"caption of picture {n}" and hit.ocr_text == f"picture {n}"
        assert hit.image_id == content_hash(hit.source_id, png(pictures[n]))
        assert hit.meta["filename"] == f"img/{n}.png"
        assert hit.thumbnail is not None
        thumb = Image.open(io.BytesIO(hit.thumbnail))
        assert thumb.format == "JPEG" and max(thumb.size) <= 128
    with pytest.raises(ValueError):
        index.search_text("  ")


def test_upsert_replaces_a_sources_images_and_deletes_remove_them(
    index: ImageIndex, pictures: list[Image.Image]
) -> None:
    _fill(index, pictures[:3])
    old = png(pictures[0])
    new = png(pictures[5])
    replaced = index.embed([item("img/0", new, caption="the new picture")])
    assert replaced is not None
    index.upsert(replaced)
    assert len(index) == 3
    assert index.search_image(new, k=1)[0].caption == "the new picture"
    assert "img/0" not in {h.source_id for h in index.search_image(old, k=3)
                           if h.score > 0.9999}
    assert index.delete_source("img/1") == 1
    assert index.delete([content_hash("img/2", png(pictures[2]))]) == 1
    assert len(index) == 1
    assert {h.source_id for h in index.search_image(old, k=5)} == {"img/0"}
    assert index.docstore is not None and index.docstore.image_count() == 1


def test_a_text_update_clears_the_sources_images_until_its_image_update(
    index: ImageIndex, pictures: list[Image.Image]
) -> None:
    data = png(pictures[1])
    images = index.embed([item("doc/a", data, caption="a")])
    assert images is not None
    stretch = [SourceUpdate("upsert", "doc/a"), images, SourceUpdate("upsert", "doc/b")]
    assert index.apply(stretch) == 1  # doc/b has no images: no write for it
    assert index.apply(stretch) == 1  # replayed: the same state
    assert len(index) == 1 and index.search_image(data, k=1)[0].source_id == "doc/a"
    # the source republished as text only: its image goes
    index.apply([SourceUpdate("upsert", "doc/a")])
    assert len(index) == 0
    index.apply([images, SourceUpdate("delete", "doc/a")])
    assert len(index) == 0


def test_updates_from_another_clip_size_are_skipped(index: ImageIndex) -> None:
    wrong = ImageUpdate("x/1", (), np.zeros((0, 0), np.float32))
    assert index.apply([wrong]) == 1  # an empty set is fine
    from kinject.index.image_index import ImageRow

    bad = ImageUpdate("x/1", (ImageRow("i1", "x/1"),), np.ones((1, 16), np.float32),
                      model="clip:other")
    index.apply([bad])
    assert len(index) == 0


def test_the_index_survives_a_restart_and_rebuilds_a_missing_snapshot(
    tmp_path: Path, clip: ClipEmbedder, pictures: list[Image.Image]
) -> None:
    directory = tmp_path / "index"
    with ImageIndex(directory, clip) as idx:
        _fill(idx, pictures[:5])
        before = [(h.source_id, round(h.score, 5)) for h in idx.search_text("boats", k=5)]
    assert (directory / "images.faiss").is_file()
    with ImageIndex(directory, clip) as idx:
        assert len(idx) == 5
        assert [(h.source_id, round(h.score, 5)) for h in idx.search_text("boats", k=5)] == before
        assert idx.search_image(png(pictures[3]), k=1)[0].source_id == "img/3"
        idx.delete_source("img/4")  # the docstore moves on; the snapshot is written on close
    (directory / "images.faiss").unlink()
    with ImageIndex(directory, clip) as idx:
        assert len(idx) == 4  # rebuilt from the docstore's vectors
        assert idx.search_image(png(pictures[2]), k=1)[0].source_id == "img/2"
