"""Test images and what the materialiser applies for them, shared by the image tests."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.service import KinjectService
from kinject.types import Record


def png(seed: int) -> bytes:
    """A 160x120 picture of coloured boxes, different for each seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (160, 120), tuple(int(x) for x in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, 120)), int(rng.integers(0, 80))
        draw.rectangle((x0, y0, x0 + 30, y0 + 30),
                       fill=tuple(int(x) for x in rng.integers(0, 256, 3)))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def ingest(svc: KinjectService, records: Sequence[Record]) -> dict[str, str]:
    """Apply what the materialiser would: text updates, and image updates when CLIP is on.
    Returns {source id: image id} of the images."""
    embedder = HashEmbedder(64)
    image_of: dict[str, str] = {}
    for record in records:
        result = ingest_record(record, IngestConfig(ocr_engine="none"))
        if result.chunks:
            svc.index.apply([SourceUpdate("upsert", record.source_id, tuple(result.chunks),
                                          embedder.encode([c.text for c in result.chunks]),
                                          embedder=embedder.name)])
        for item in result.images:
            image_of[item.source_id] = item.image_id
        if svc.images is not None and result.images:
            update = svc.images.embed(result.images)
            assert update is not None
            svc.images.upsert(update)
    return image_of
