"""Ingest settings: chunking, enrichment, dedupe, the URIs a record may name, budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class IngestSettings(BaseModel):
    model_config = {"frozen": True}

    chunk_size: int = Field(default=400, ge=32, description="characters per chunk")
    chunk_overlap: int = Field(default=40, ge=0)
    ocr_engine: Literal["auto", "rapidocr", "tesseract", "none"] = "auto"
    enrich: bool = True
    redact_pii: bool = False
    min_informativeness: float = Field(default=0.05, ge=0.0, lt=1.0)
    batch_size: int = Field(default=32, ge=1)
    linger_ms: int = Field(default=200, ge=0)
    # A chunk this similar (MinHash-estimated Jaccard of its shingles) to a chunk of another
    # source is kept in the docstore but not searched (the first one is). dedupe=false: off.
    dedupe: bool = True
    near_duplicate_threshold: float = Field(default=0.9, ge=0.5, le=1.0)
    # A record's ``uri`` is read by the worker, and any client of the broker can write
    # records: by default none may name a local file or a URL. Directories listed here are
    # resolved (a symlink inside that points outside is refused); URL prefixes are http(s)
    # URLs whose host and path a fetched URL (and each redirect) must keep.
    uri_allow_dirs: list[Path] = Field(default_factory=list)
    uri_allow_urls: list[str] = Field(default_factory=list)

    @field_validator("uri_allow_urls")
    @classmethod
    def _http_prefixes(cls, v: list[str]) -> list[str]:
        # The one check, where the workers apply the prefixes (a light module: no I/O).
        from kinject.ingest.uris import UriPolicy

        UriPolicy(url_prefixes=tuple(v))  # ValueError naming the bad prefix
        return v
    # Budgets against poison pills; a record over one is dead-lettered with the reason.
    # Seconds one record may take to read (parse, OCR, chunk) in the worker's child process
    # before it is killed; 0 reads in the worker's thread, unbounded. 120 s: a scanned page
    # takes 2-6 s of OCR on 2 busy cores (about 25 pages fit), a 2,000-page text PDF 4 s,
    # a 1 MB page of 100,000 nested tags 2 s; a poison pill holds its partition this long.
    record_timeout_s: float = Field(default=120.0, ge=0.0)
    # HTML larger than this is refused (parsing costs about a second per MB); elements nested
    # deeper than html_max_depth (real pages: a few dozen) are read as plain text.
    html_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    html_max_depth: int = Field(default=256, ge=1, le=512)
    # Pages of one PDF (text-layer pages read at ~500/s; blank pages are never OCR'd).
    pdf_max_pages: int = Field(default=2000, ge=1)
    # Pixels of one image, checked before decoding: a 36 MP photo passes, a 12000x12000 PNG
    # bomb (169 KB, 17 s and 1.8 GB to read) does not; well under Pillow's 89.5 MP warning.
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    # One audio record: bytes, checked first (a two-hour MP3 at 320 kbit/s is 290 MB), and
    # seconds, from the header before decoding (decoded audio takes 230 MB an hour in
    # memory). A recording's time budget is renewed while its transcription advances
    # (record_timeout_s without progress stops it), so this cap bounds its time as well.
    audio_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    audio_max_seconds: float = Field(default=7200.0, gt=0)


