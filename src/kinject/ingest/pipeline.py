"""``ingest_record``: one upsert Record -> Documents, Chunks and ImageItems."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from kinject.errors import BadRecord
from kinject.ingest import audio, markup, ocr, pdf
from kinject.ingest.audio import AudioConfig
from kinject.ingest.chunking import chunk_document
from kinject.ingest.enrich import enrich_text
from kinject.ingest.image import parse_image
from kinject.ingest.normalise import detect_lang, normalise_text
from kinject.ingest.parsers import parse_documents
from kinject.ingest.pdf import parse_pdf
from kinject.ingest.quality import is_low_information, redact_pii
from kinject.ingest.sniff import sniff_kind
from kinject.ingest.uris import UriPolicy
from kinject.types import Chunk, Document, ImageItem, Record

log = logging.getLogger(__name__)

OCR_ENGINES = ("auto", "rapidocr", "tesseract", "none")


@dataclass(frozen=True)
class IngestConfig:
    """How records are turned into chunks. ``ocr_engine="none"`` skips OCR."""

    chunk_size: int = 400
    chunk_overlap: int = 40
    ocr_engine: str = "auto"
    # Dates and units rendered in ISO-8601 / metric beside the original text.
    enrich: bool = True
    # Emails, phone, ID and card numbers replaced by [EMAIL], [PHONE], ... (off by default).
    redact_pii: bool = False
    # Chunks scoring below this (boilerplate, navigation) are dropped; 0 keeps everything.
    min_informativeness: float = 0.05
    # Which files and URLs a record's ``uri`` may name (default: none; ingest/uris.py).
    uris: UriPolicy = field(default_factory=UriPolicy)
    # Budgets of the parsers (a record over one is a BadRecord, except HTML nesting deeper
    # than html_max_depth, which is read as plain text): see markup, pdf and ocr.
    html_max_bytes: int = markup.MAX_BYTES
    html_max_depth: int = markup.MAX_DEPTH
    pdf_max_pages: int = pdf.MAX_PAGES
    image_max_pixels: int = ocr.MAX_PIXELS
    # Speech to text (ingest/audio.py): the Whisper model and the caps of one recording.
    audio: AudioConfig = field(default_factory=AudioConfig)

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
        if not 0.0 <= self.min_informativeness < 1.0:
            raise ValueError(
                f"min_informativeness must be in [0, 1), got {self.min_informativeness!r}")
        for name in ("html_max_bytes", "html_max_depth", "pdf_max_pages", "image_max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class Ingested:
    """What one record yields. Chunk ids are unique within it."""

    documents: list[Document] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)
    # Chunks dropped as low-information (boilerplate); a record of nothing else is reported.
    dropped: int = 0


NOTHING_EXTRACTED = "no text could be extracted from the record"


def nothing_extracted(result: Ingested) -> str:
    """Why a record that yielded no chunk (and no image for a CLIP index) is dead-lettered."""
    if result.images:
        return (f"{NOTHING_EXTRACTED}: the image has no caption (meta.caption, or a "
                "<file>.meta.json sidecar beside a published file) and OCR found no text in "
                "it; with no CLIP checkpoint (KINJECT_MODELS__CLIP_CHECKPOINT) nothing of it "
                "can be searched")
    return NOTHING_EXTRACTED


def ingest_record(record: Record, config: IngestConfig | None = None) -> Ingested:
    """Parse, normalise and chunk one upsert record.

    The kind is sniffed when the record has none. Raises BadRecord (with its ``stage``) or
    UnsupportedSource for a record that cannot be read; deletes are the caller's job.
    """
    config = config or IngestConfig()
    if record.op != "upsert":
        raise ValueError(f"ingest_record handles upserts; {record.source_id!r} is a {record.op}")
    if not record.content.strip():  # said plainly, not as the parser's error at char 0
        what = "empty (0 bytes)" if not record.content else "only whitespace"
        raise BadRecord(f"{NOTHING_EXTRACTED}: it is {what}", stage="parse")
    kind = record.kind or sniff_kind(record.content, record.meta.get("filename"))
    images: list[ImageItem] = []
    if kind == "image":
        item, raw_docs = parse_image(record, config.ocr_engine,
                                     max_pixels=config.image_max_pixels)
        images.append(item)
    elif kind == "pdf":
        raw_docs = parse_pdf(record, kind, config.ocr_engine, max_pages=config.pdf_max_pages)
    elif kind == "audio":
        raw_docs = audio.parse_audio(record, config.audio, max_chars=config.chunk_size)
    elif kind == "html":
        raw_docs = markup.parse_html(record, kind, max_bytes=config.html_max_bytes,
                                     max_depth=config.html_max_depth)
    else:
        raw_docs = parse_documents(record, kind)

    documents: list[Document] = []
    chunks: list[Chunk] = []
    seen: set[str] = set()
    dropped = 0
    for raw in raw_docs:
        text = normalise_text(raw.text)
        meta = raw.meta
        if config.redact_pii:  # after normalising, so full-width digits are caught too
            text, n = redact_pii(text)
            meta = {**meta, "pii_redacted": n} if n else meta
        if config.enrich:
            text = enrich_text(text)
        if not text:
            continue
        doc = dataclasses.replace(raw, text=text, title=normalise_text(raw.title),
                                  lang=detect_lang(text), meta=meta)
        documents.append(doc)
        for chunk in chunk_document(doc, config.chunk_size, config.chunk_overlap):
            if chunk.chunk_id in seen:
                continue
            if config.min_informativeness and is_low_information(
                    chunk.text, chunk.lang, config.min_informativeness):
                log.debug("dropped low-information chunk of %s: %r", record.source_id,
                          chunk.text[:80])
                dropped += 1
                continue
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
    return Ingested(documents, chunks, images, dropped)
