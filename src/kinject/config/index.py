"""Index settings: when exact search gives way to HNSW, the search mode, snapshots."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class IndexSettings(BaseModel):
    model_config = {"frozen": True}

    # Vectors in a space before exact search gives way to HNSW (built in the background).
    hnsw_threshold: int = Field(default=50_000, ge=1)
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=80, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=8)
    # Default search mode: vector + BM25 fused by reciprocal rank, or one of them alone.
    search_mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    rrf_k: int = Field(default=60, ge=1)
    # Seconds between index snapshots while materialising (and one on shutdown).
    snapshot_every_s: float = Field(default=30.0, gt=0)


