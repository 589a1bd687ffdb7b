"""What RagService works from: its config, a question asked of it, and the plan made for one.

The abstention texts and the answer-marker pattern live here too: planning, streaming and citing
all use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from kinject.rag import generate as gen
from kinject.types import Hit

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.index.filters import SearchFilters
    from kinject.protocols import Generator

ABSTAIN_TEXT = "Not in the knowledge base."
ABSTAIN_TEXT_ZH = "知识库中没有相关内容。"
_CJK = re.compile(r"[\u3400-\u9fff]")
_MARKER = re.compile(r"\[(\d+)\]")

Mode = Literal["read", "free"]
MODES: tuple[Mode, ...] = ("read", "free")


@dataclass(frozen=True)
class RagConfig:
    k: int = 4
    # free mode and routes auto/both: below this cosine between the question and its best
    # retrieved passage, nothing in the index is about the question.
    min_relevance: float = 0.25
    # Below this share of answer words found in the passages a free answer is not grounded.
    min_grounding: float = 0.5
    mode: Mode = "read"
    # Longest written answer in characters; max_new_tokens follows from the passages' own
    # tokens-per-character (Chinese needs several tokens a character).
    max_answer_chars: int = 160
    search_mode: str = "hybrid"
    cache_size: int = 256
    batch_window_ms: float = 0.0
    max_batch: int = 16
    # Passages the reader weighs when a question names nothing (one that names what it asks
    # about is looked for in all k), or the generator writes from (free).
    reader_passages: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> RagConfig:
        r = settings.rag
        return cls(k=r.k, min_relevance=r.min_relevance, mode=r.mode,
                   max_answer_chars=r.max_answer_chars, search_mode=settings.index.search_mode,
                   cache_size=r.cache_size, batch_window_ms=r.batch_window_ms,
                   max_batch=r.max_batch, reader_passages=r.reader_passages)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.min_grounding <= 1.0:
            raise ValueError(f"min_grounding must be in [0, 1], got {self.min_grounding}")
        check_mode(self.mode)
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {self.max_answer_chars}")
        if self.reader_passages < 1:
            raise ValueError(f"reader_passages must be >= 1, got {self.reader_passages}")


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (the cue-list modes 'auto' and 'span' "
                         f"were removed), got {mode!r}")
    return mode


@dataclass(frozen=True)
class Question:
    text: str
    k: int
    filters: SearchFilters | None
    route: str
    mode: Mode
    sampling: gen.Sampling | None = None  # None: greedy; a sampled answer is never cached
    # A conversation's earlier user turns, most recent last: retrieval reads them with the
    # question, and the reader takes from them what a follow-up that names nothing asks
    # about ("When was it founded?"); the reader reads ``text``, the question asked now.
    context: tuple[str, ...] = ()

    @property
    def search_text(self) -> str:
        """What retrieval looks for: the context's turns, then the question."""
        return "\n".join((*self.context, self.text))


@dataclass
class _Plan:
    """What a question needs from a model, worked out before any model runs."""

    q: Question
    route: str
    adapter_version: str | None
    passages: list[Hit] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    kind: Literal["abstain", "free", "closed", "read"] = "abstain"
    max_new_tokens: int = 32
    timings: dict[str, float] = field(default_factory=dict)
    # The generator bound to ``adapter_version`` (None: the service's own).
    generator: Generator | None = None


def _abstain_text(question: str) -> str:
    return ABSTAIN_TEXT_ZH if _CJK.search(question) else ABSTAIN_TEXT

