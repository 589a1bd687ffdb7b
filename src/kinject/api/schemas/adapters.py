"""Bodies of the adapter and fine-tuning job routes, and :func:`finite` for their numbers."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field


class AdapterSummary(BaseModel):
    """One adapter version as listed (GET /v1/adapters/{version} has the rest)."""

    version: str = Field(description="sha256 of the adapter's weights")
    status: str = Field(description="candidate, promoted, rejected or tainted")
    active: bool = Field(description="whether this version serves now")
    parent: str | None = None
    base_model: str
    created_at: float
    corpus_cycle: int = Field(description="the corpus cycle it was trained through")
    sources: int = Field(description="how many sources its weights learnt from")
    metrics: dict[str, float | None] = Field(default_factory=dict)


class AdapterOut(AdapterSummary):
    """One adapter version: its gate report and, for admin keys, its lineage and training
    config (which sources, deleted ones included, it was trained on; local paths)."""

    lineage: list[str] | None = Field(
        default=None, description="the source ids its weights learnt from (admin keys only; "
        "null for others, `sources` counts them)")
    ancestors: list[str] = Field(description="its parent, the parent's parent, ...")
    base_model_hash: str = ""
    corpus_manifest: str = ""
    train_config: dict[str, Any] | None = Field(
        default=None, description="the cycle's training config (admin keys only)")
    report: dict[str, Any] = Field(default_factory=dict, description="the gate's report")


class AdaptersOut(BaseModel):
    active: str | None = Field(description="the version serving now; null: the base model")
    adapters: list[AdapterSummary] = Field(description="oldest first")


class ActivationOut(BaseModel):
    """A change of the serving adapter; null versions mean the base model."""

    version: str | None
    previous: str | None
    reason: str
    at: float


class JobOut(BaseModel):
    """A fine-tuning job: one cycle (corpus -> LoRA training -> gate -> promote or reject)."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "skipped", "failed", "interrupted"] = Field(
        description="interrupted: a shutdown (or a dead process) stopped it; nothing was "
                    "promoted and the next cycle trains the same examples")
    stage: str = Field(description="starting, paraphrasing, training, gate, then the outcome")
    progress: float = Field(ge=0.0, le=1.0)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    outcome: Literal["promoted", "rejected", "skipped"] | None = Field(
        default=None, description="what the cycle decided, once it has finished")
    version: str | None = Field(default=None, description="the adapter version it trained")
    parent: str | None = None
    corpus_cycle: int | None = None
    train_examples: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict, description="the gate's report")


class JobsOut(BaseModel):
    jobs: list[JobOut] = Field(description="newest first")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a diverged loss, an overflowing perplexity)
    turned into None: JSON has no such numbers, and the response must still be sent."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value

