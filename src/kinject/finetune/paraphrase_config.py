"""How LM paraphrasing is set (:class:`ParaphraseConfig`) and what one pass did
(:class:`ParaphraseStats`); the pass itself is :mod:`kinject.finetune.paraphrase`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ParaphraseConfig:
    """How many paraphrases to want, how to sample them, and the gate's length bounds."""

    per_sentence: int = 1  # kept paraphrases wanted per sentence (0: off)
    candidates: int = 2  # sampled candidates per wanted paraphrase (the gate drops many)
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 8
    max_sentences: int = 12  # sentences paraphrased per chunk
    min_ratio: float = 0.5
    max_ratio: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("per_sentence", "max_sentences"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("candidates", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not 0 < self.min_ratio <= 1 <= self.max_ratio:
            raise ValueError(f"need 0 < min_ratio <= 1 <= max_ratio, got {self.min_ratio!r}, "
                             f"{self.max_ratio!r}")

    @classmethod
    def from_settings(cls, ft: Any) -> ParaphraseConfig:
        """From ``Settings.finetune``: ``lm_paraphrases`` per sentence, sampled from its seed."""
        return cls(per_sentence=ft.lm_paraphrases, seed=ft.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParaphraseConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown paraphrase settings: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class ParaphraseStats:
    """What one pass did: sentences asked about, candidates generated now, kept now, and
    sentences whose candidates came from the cache."""

    sentences: int = 0
    generated: int = 0
    kept: int = 0
    cached: int = 0
    seconds: float = 0.0

    def to_metrics(self) -> dict[str, float]:
        return {"paraphrases_generated": self.generated, "paraphrases_kept": self.kept,
                "paraphrase_sentences_cached": self.cached,
                "paraphrase_seconds": round(self.seconds, 3)}
