"""Frozen value types shared by every stage of kinject.

They validate themselves in ``__post_init__`` and name the bad value, so a wrong value
fails where it is made, not three stages later.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["upsert", "delete"]
Route = Literal["rag", "adapter", "both", "auto"]
KINDS = ("text", "markdown", "html", "json", "jsonl", "xml", "csv", "tsv", "pdf", "image", "sql",
         "audio")


def content_hash(*parts: str | bytes) -> str:
    """A stable 16-byte hex digest of the parts (sha256, truncated)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x1f")
    return h.hexdigest()[:32]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class Record:
    """One unit of knowledge as it arrives on ``kinject.records``."""

    source_id: str
    op: Op = "upsert"
    kind: str | None = None
    content: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)
    ts: float | None = None
    # Where it was read from, once consumed: (topic, partition, offset).
    position: tuple[str, int, int] | None = None

    def __post_init__(self) -> None:
        _require(bool(self.source_id) and isinstance(self.source_id, str),
                 f"source_id must be a non-empty string, got {self.source_id!r}")
        _require(self.op in ("upsert", "delete"),
                 f"op must be 'upsert' or 'delete', got {self.op!r}")
        _require(self.kind is None or self.kind in KINDS,
                 f"kind must be one of {KINDS} or None, got {self.kind!r}")
        _require(isinstance(self.content, bytes),
                 f"content must be bytes, got {type(self.content)}")


@dataclass(frozen=True)
class Document:
    """A normalised piece of text from one source (a file, a row, a page)."""

    doc_id: str
    source_id: str
    text: str
    kind: str
    lang: str = "en"
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.doc_id), "doc_id must be non-empty")
        _require(bool(self.source_id), "source_id must be non-empty")
        _require(isinstance(self.text, str), f"text must be str, got {type(self.text)}")


@dataclass(frozen=True)
class Chunk:
    """A retrievable unit of a document. ``chunk_id`` = hash(source_id, text)."""

    chunk_id: str
    doc_id: str
    source_id: str
    text: str
    ordinal: int = 0
    lang: str = "en"
    kind: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.chunk_id), "chunk_id must be non-empty")
        _require(bool(self.text.strip()), f"chunk {self.chunk_id} has empty text")
        _require(self.ordinal >= 0, f"ordinal must be >= 0, got {self.ordinal}")


@dataclass(frozen=True)
class ImageItem:
    """An image for the CLIP index; caption and OCR text are indexed as text chunks too."""

    image_id: str
    source_id: str
    data: bytes
    caption: str = ""
    ocr_text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.image_id), "image_id must be non-empty")
        _require(len(self.data) > 0, f"image {self.image_id} has no bytes")


@dataclass(frozen=True)
class TrainingExample:
    """One fine-tuning example with its lineage."""

    example_id: str
    chunk_id: str
    source_id: str
    prompt: str
    completion: str
    form: str = "passage"
    cycle: int = 0
    lang: str = "en"

    def __post_init__(self) -> None:
        _require(bool(self.completion), f"example {self.example_id} has an empty completion")


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score (higher is better)."""

    chunk_id: str
    source_id: str
    text: str
    score: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Citation:
    """A passage an answer rests on: ``n`` is its [n] marker in the answer.

    Where in the source the passage is, when its chunk knows: ``start_s``/``end_s`` (seconds
    into a recording) or ``page`` (1-based page of a PDF); None otherwise.
    """

    n: int
    source_id: str
    chunk_id: str
    score: float
    snippet: str
    start_s: float | None = None
    end_s: float | None = None
    page: int | None = None

    def __post_init__(self) -> None:
        _require(self.n >= 1, f"citation number must be >= 1, got {self.n}")
        _require((self.start_s is None) == (self.end_s is None),
                 f"start_s and end_s go together, got {self.start_s!r} and {self.end_s!r}")
        if self.start_s is not None and self.end_s is not None:
            _require(0 <= self.start_s <= self.end_s,
                     f"need 0 <= start_s <= end_s, got {self.start_s} and {self.end_s}")
        _require(self.page is None or self.page >= 1, f"page must be >= 1, got {self.page}")

    @classmethod
    def of(cls, n: int, hit: Hit) -> Citation:
        """Citation [n] of ``hit``, placed from its chunk's meta: the time span of a speech
        chunk (``unit`` "speech": ``start_s``/``end_s``), the page of a PDF page chunk."""
        meta = hit.meta
        start = end = None
        page = None
        unit = meta.get("unit")
        if unit == "speech":
            start, end = _number(meta.get("start_s")), _number(meta.get("end_s"))
            if start is None or end is None or not 0 <= start <= end:
                start = end = None
        elif unit == "page":
            number = meta.get("page")
            page = number if type(number) is int and number >= 1 else None
        return cls(n=n, source_id=hit.source_id, chunk_id=hit.chunk_id, score=hit.score,
                   snippet=hit.text, start_s=start, end_s=end, page=page)

    @property
    def label(self) -> str:
        """The source as a reader would cite it: "talk.mp3 at 0:41-0:47", "report.pdf, page 3",
        or the source id alone. Times are widened to whole seconds so the span still covers."""
        if self.start_s is not None and self.end_s is not None:
            return (f"{self.source_id} at {_clock(math.floor(self.start_s))}"
                    f"-{_clock(math.ceil(self.end_s))}")
        if self.page is not None:
            return f"{self.source_id}, page {self.page}"
        return self.source_id


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _clock(seconds: int) -> str:
    """``seconds`` as m:ss, or h:mm:ss from an hour."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class Answer:
    """What ``ask`` returns: the answer text and the passages it came from."""

    text: str
    citations: tuple[Citation, ...] = ()
    images: tuple[str, ...] = ()
    adapter_version: str | None = None
    route: Route = "rag"
    abstained: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AdapterVersion:
    """An immutable, content-addressed LoRA adapter."""

    version: str
    base_model: str
    parent: str | None = None
    created_at: float = 0.0
    status: Literal["candidate", "promoted", "active", "rejected", "tainted", "retired"] = (
        "candidate")
    metrics: dict[str, float] = field(default_factory=dict)
    # What the registry's manifest.json holds beside the fields above (finetune/registry.py).
    base_model_hash: str = ""
    corpus_manifest: str = ""
    # Source ids whose examples shaped these weights (its own training set and its parent's).
    lineage: tuple[str, ...] = ()
    # The corpus cycle it was trained through: the next cycle trains on what came after.
    corpus_cycle: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.version), "version must be non-empty")
        _require(self.status in ("candidate", "promoted", "active", "rejected", "tainted",
                                 "retired"), f"unknown adapter status {self.status!r}")
