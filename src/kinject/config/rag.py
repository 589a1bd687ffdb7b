"""Answering settings (rag/): retrieval depth, the reader's mode, abstention, images."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator


class RagSettings(BaseModel):
    """Answering (rag/): retrieval depth, the reader's mode, abstention, cache, batching."""

    model_config = {"frozen": True}

    k: int = Field(default=4, ge=1, description="passages retrieved per question")
    # read: the reader model (models.reader) chooses the passage most about the question by
    # question-PMI, reads it and abstains itself when none is about it (bench/rag_quality.py:
    # test families 0.55 right, 0.82 abstention on unknown entities, against 0.32 / 0.39 for
    # the cue-list reader it replaced). free: the generator writes from the best passages
    # (also how route "both" answers); an answer whose words are not in them falls back to the
    # best passage itself.
    mode: Literal["read", "free"] = "read"
    # free mode (and routes auto/both) take a question as unanswerable from the index when
    # the cosine between it and its best retrieved passage is below this (read mode's reader
    # judges that itself). With MiniLM, answerable questions score about 0.4-0.8 against
    # their passage and unrelated ones 0.0-0.3.
    min_relevance: float = Field(default=0.25, ge=-1.0, le=1.0)
    max_answer_chars: int = Field(default=160, ge=1)
    cache_size: int = Field(default=256, ge=0, description="answers kept in the LRU cache")
    # Concurrent questions arriving within this window run as one batch (0: off).
    batch_window_ms: float = Field(default=5.0, ge=0.0)
    max_batch: int = Field(default=16, ge=1)
    # Passages the reader model weighs per question that names nothing (one prompt each), or
    # the generator writes from in free mode. A question naming what it asks about is looked
    # for in all k retrieved passages, weighing only the units that name it (dev families:
    # Chinese 0.82 -> 0.93 right, the named passage ranked 3rd or 4th in 3 of 28).
    reader_passages: int = Field(default=2, ge=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("read", "free"):
            raise ValueError(f"{v!r} is not a mode (the cue-list modes 'auto' and 'span' were "
                             "removed); allowed: 'read' (the default) or 'free'")
        return v

    # With the CLIP image index on, an answer (not an abstention, not closed book) also lists
    # up to max_images images CLIP finds for the question, after the images of the passages
    # it cites, when their CLIP score (text-image cosine) reaches image_min_score. With
    # OpenAI's ViT-B-32 a text that describes a picture scores about 0.3 and an unrelated one
    # under 0.2; a CLIP of another family may need another threshold. max_images=0: off.
    max_images: int = Field(default=3, ge=0, description="images CLIP adds to an answer")
    image_min_score: float = Field(default=0.25, ge=-1.0, le=1.0)


