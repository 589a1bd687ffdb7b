"""The body of POST /v1/eval."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class EvalReportOut(BaseModel):
    """What POST /v1/eval returns: the report `kinject eval` writes as report.json."""

    set: str
    n: int = Field(description="questions in the set")
    runs: list[dict[str, Any]] = Field(
        description="one per target: target, aggregate (means, abstention, latency p50/p95), "
                    "by_language and items (answer, citations and metrics per question)")
    gate: dict[str, Any]
    comparison: dict[str, Any] | None = None
