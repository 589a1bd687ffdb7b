"""Bodies of search (text and image) and ask, and the answers with their citations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RouteName = Literal["rag", "adapter", "both", "auto"]


class HitOut(BaseModel):
    chunk_id: str
    source_id: str
    text: str
    score: float
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchOut(BaseModel):
    query: str
    k: int
    hits: list[HitOut]
    took_ms: float


class ImageHitOut(BaseModel):
    image_id: str
    source_id: str
    caption: str
    ocr_text: str
    score: float
    # a JPEG thumbnail (base64) when the CLIP index keeps one
    thumbnail_b64: str | None = None


class ImageSearchOut(BaseModel):
    k: int
    hits: list[ImageHitOut]
    took_ms: float


class ImageQueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(min_length=1, description="the image's bytes, base64")
    k: int = Field(default=5, ge=1)


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    k: int | None = Field(default=None, ge=1)
    filters: list[str] = Field(default_factory=list,
                               description="key=value: kind, lang, source, since, until, tag")
    route: RouteName | None = Field(
        default=None, description="rag (passages), adapter (closed book: the adapter's own "
        "knowledge), both (passages read with the adapter; closed book when none is "
        "relevant), auto (the default)")
    adapter: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="answer with this adapter version (an id or a unique prefix) or 'base' "
        "(no adapter); default: the version serving now")
    stream: bool = Field(default=False, description="answer as server-sent events")


class CitationOut(BaseModel):
    n: int
    source_id: str
    chunk_id: str
    score: float
    snippet: str
    start_s: float | None = Field(
        default=None, description="audio: where in the recording the cited speech starts, "
        "in seconds from its start (with end_s); null for other sources")
    end_s: float | None = Field(
        default=None, description="audio: where in the recording the cited speech ends, "
        "in seconds from its start")
    page: int | None = Field(default=None,
                             description="PDF: the 1-based page the cited text is on")


class AnswerOut(BaseModel):
    text: str
    citations: list[CitationOut]
    images: list[str] = Field(default_factory=list)
    adapter_version: str | None = None
    route: str
    abstained: bool = False
    timings: dict[str, float] = Field(default_factory=dict)

