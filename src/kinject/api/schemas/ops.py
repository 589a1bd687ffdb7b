"""Bodies of the operations routes: lineage, dead letters, health, readiness, status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class LineageOut(BaseModel):
    source_id: str
    events: list[dict[str, Any]]
    chunks_now: list[str]


class DeadLetterOut(BaseModel):
    count: int
    letters: list[dict[str, Any]]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, Any]


class CorpusOut(BaseModel):
    examples: int = Field(description="training examples in the fine-tuning corpus")
    sources: int = Field(description="sources they come from")
    cycle: int = Field(description="the corpus cycle examples arriving now belong to")
    pending: int = Field(description="examples the next fine-tuning cycle will train on")


class StatusOut(BaseModel):
    index_chunks: int
    adapter_version: str | None
    dlq_count: int | None
    ingest_lag: dict[str, int] | None
    recent: list[dict[str, Any]]
    corpus: CorpusOut | None = Field(
        default=None, description="the data dir's fine-tuning corpus; null while empty")
    corpus_lag: dict[str, int] | None = Field(
        default=None, description="chunk events the corpus materialisers of this data dir's "
        "store (group <prefix>-corpus-<store id>) have not taken in, per partition of the "
        "chunks topic")
    thumbnails: bool = Field(
        default=False, description="whether this server keeps image thumbnails (its CLIP "
        "image index is on): without, GET /v1/images/{id}/thumbnail is always 404")


