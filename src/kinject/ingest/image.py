"""Images: an ImageItem for the CLIP index, plus text Documents for its caption and OCR text."""

from __future__ import annotations

import logging

from kinject.errors import DependencyMissing
from kinject.ingest.ocr import MAX_PIXELS, load_image, ocr_image
from kinject.ingest.parsers import doc_id
from kinject.types import Document, ImageItem, Record, content_hash

log = logging.getLogger(__name__)


def parse_image(record: Record, ocr_engine: str = "auto", *, max_pixels: int = MAX_PIXELS
                ) -> tuple[ImageItem, list[Document]]:
    """The image and its text: ``meta["caption"]`` and, unless ``ocr_engine="none"``, OCR.

    With ``ocr_engine="auto"`` and no engine installed the image is kept without OCR text
    (a warning is logged); a named engine that cannot run raises DependencyMissing.
    Bytes that are not an image raise BadRecord(stage="ocr"); an image of more than
    ``max_pixels`` pixels, BadRecord(stage="parse"), before it is decoded.
    """
    # Decoded once: validates the bytes before anything is stored, and is what OCR reads.
    img = load_image(record.content, max_pixels=max_pixels)
    image_id = content_hash(record.source_id, record.content)
    caption = str(record.meta.get("caption") or "").strip()
    ocr_text = ""
    if ocr_engine != "none":
        try:
            ocr_text = ocr_image(img, ocr_engine)
        except DependencyMissing:
            if ocr_engine != "auto":
                raise
            log.warning(
                "no OCR engine installed; image %s is indexed without its text", record.source_id
            )
    meta = {**record.meta, "image_id": image_id, "width": img.width, "height": img.height}
    item = ImageItem(
        image_id, record.source_id, record.content, caption=caption, ocr_text=ocr_text, meta=meta
    )
    docs = []
    title = str(record.meta.get("title") or record.meta.get("filename") or "")
    for unit, text in (("caption", caption), ("ocr", ocr_text)):
        if text:
            docs.append(
                Document(
                    doc_id(record.source_id, unit),
                    record.source_id,
                    text,
                    "image",
                    title=title,
                    meta={**meta, "unit": unit},
                )
            )
    return item, docs
