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
    # How hybrid search fuses vectors and BM25: "convex" (min-max normalised scores, weighted;
    # on real documents it kept both retrievers' strong hits on top where RRF's flat 1/(60+rank)
    # buried them: bench/realdocs.py --search-only) or "rrf" (reciprocal rank, rrf_k).
    fusion: Literal["convex", "rrf"] = "convex"
    # The vectors' share of a convex fusion, BM25 gets the rest; 0.5 trusts neither more (on
    # the dev documents 0.4-0.6 tied, BM25 being the stronger there, MiniLM on generated bios).
    fusion_vector_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    rrf_k: int = Field(default=60, ge=1)
    # Seconds between index snapshots while materialising (and one on shutdown).
    snapshot_every_s: float = Field(default=30.0, gt=0)


