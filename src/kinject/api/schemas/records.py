"""Bodies of POST /v1/records."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kinject.types import KINDS


class RecordIn(BaseModel):
    """One record, as on kinject.records (a ``uri`` is not accepted over HTTP)."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["upsert", "delete"] = "upsert"
    source_id: str = Field(min_length=1, max_length=1024)
    kind: Literal[KINDS] | None = None  # type: ignore[valid-type]
    content: str | None = Field(default=None, description="text content")
    content_b64: str | None = Field(default=None, description="binary content, base64")
    meta: dict[str, Any] = Field(default_factory=dict)
    ts: float | None = None


class RecordsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[RecordIn] = Field(min_length=1)


class AcceptedRecord(BaseModel):
    id: str = Field(description="the record's id in the durable outbox")
    source_id: str
    op: str


class RecordsAccepted(BaseModel):
    accepted: int
    topic: str
    records: list[AcceptedRecord]

