"""``ingest_record``: one upsert Record -> Documents, Chunks and ImageItems."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from kinject.ingest.chunking import chunk_document
from kinject.ingest.image import parse_image
from kinject.ingest.normalise import detect_lang, normalise_text
from kinject.ingest.parsers import parse_documents
from kinject.ingest.sniff import sniff_kind
from kinject.types import Chunk, Document, ImageItem, Record

log = logging.getLogger(__name__)

OCR_ENGINES = ("auto", "rapidocr", "tesseract", "none")


@dataclass(frozen=True)
class IngestConfig:
    """How records are turned into chunks. ``ocr_engine="none"`` skips OCR."""

    chunk_size: int = 400
    chunk_overlap: int = 40
    ocr_engine: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_size, int) or self.chunk_size < 32:
            raise ValueError(f"chunk_size must be an int >= 32, got {self.chunk_size!r}")
        if not isinstance(self.chunk_overlap, int) or not (
            0 <= self.chunk_overlap < self.chunk_size
        ):
            raise ValueError(
                f"chunk_overlap must be an int in [0, chunk_size={self.chunk_size}), "
                f"got {self.chunk_overlap!r}"
            )
        if self.ocr_engine not in OCR_ENGINES:
            raise ValueError(f"ocr_engine must be one of {OCR_ENGINES}, got {self.ocr_engine!r}")


@dataclass
class Ingested:
    """What one record yields. Chunk ids are unique within it."""

    documents: list[Document] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)


def ingest_record(record: Record, config: IngestConfig | None = None) -> Ingested:
    """Parse, normalise and chunk one upsert record.

    The kind is sniffed when the record has none. Raises BadRecord (with its ``stage``) or
    UnsupportedSource for a record that cannot be read; deletes are the caller's job.
    """
    config = config or IngestConfig()
    if record.op != "upsert":
        raise ValueError(f"ingest_record handles upserts; {record.source_id!r} is a {record.op}")
    kind = record.kind or sniff_kind(record.content, record.meta.get("filename"))
    images: list[ImageItem] = []
    if kind == "image":
        item, raw_docs = parse_image(record, config.ocr_engine)
        images.append(item)
    else:
        raw_docs = parse_documents(record, kind)

    documents: list[Document] = []
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for raw in raw_docs:
        text = normalise_text(raw.text)
        if not text:
            continue
        doc = dataclasses.replace(
            raw, text=text, title=normalise_text(raw.title), lang=detect_lang(text)
        )
        documents.append(doc)
        for chunk in chunk_document(doc, config.chunk_size, config.chunk_overlap):
            if chunk.chunk_id not in seen:
                seen.add(chunk.chunk_id)
                chunks.append(chunk)
    log.debug(
        "ingested %s (%s): %d documents, %d chunks, %d images",
        record.source_id,
        kind,
        len(documents),
        len(chunks),
        len(images),
    )
    return Ingested(documents, chunks, images)
