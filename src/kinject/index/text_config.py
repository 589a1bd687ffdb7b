"""How the text index searches (TextIndexConfig) and the names of its spaces and modes."""

from __future__ import annotations

from dataclasses import dataclass, field

from kinject.index.ann_index import AnnConfig

SEARCH_MODES = ("hybrid", "vector", "bm25")
FUSIONS = ("convex", "rrf")
ZH_SPACE = "zh"
ZH_LANGS = ("zh", "mixed")


@dataclass(frozen=True)
class TextIndexConfig:
    """How the text index searches. ``zh_for_english``: also search the multilingual space
    for English queries (off: no gain measured by bench/search.py, at the USE cost)."""

    ann: AnnConfig = field(default_factory=AnnConfig)
    # How hybrid search fuses vectors and BM25 (text_search.py says why convex by default):
    # "convex" weighs min-max normalised scores, vector_weight to the vectors; "rrf" sums
    # 1 / (rrf_k + rank).
    fusion: str = "convex"
    vector_weight: float = 0.5
    rrf_k: int = 60
    # Candidates fetched per retriever: max(overfetch * k, min_candidates).
    overfetch: int = 4
    min_candidates: int = 50
    bm25_rebuild_min: int = 256
    zh_for_english: bool = False
    # Near/exact duplicates of another source's chunk are kept but not searched
    # (index/visibility.py); None turns that off.
    near_duplicate_threshold: float | None = 0.9

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not 0.0 <= self.vector_weight <= 1.0:
            raise ValueError(f"vector_weight must be in [0, 1], got {self.vector_weight}")
        if self.rrf_k < 1:
            raise ValueError(f"rrf_k must be >= 1, got {self.rrf_k}")
        if self.overfetch < 1 or self.min_candidates < 1:
            raise ValueError(f"overfetch and min_candidates must be >= 1, got "
                             f"{self.overfetch}, {self.min_candidates}")
