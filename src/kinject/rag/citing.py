"""RagService's answers and their citations: a written answer checked against its passages
(or replaced by the best passage), the [n] markers and the Answer itself."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from kinject.rag.questions import _MARKER, RagConfig, _abstain_text, _Plan
from kinject.rag.sentences import LINK, best_grounding
from kinject.types import Answer, Citation

log = logging.getLogger(__name__)


def cited(text: str, passages: int) -> list[int]:
    """The passages ``text``'s [n] markers cite, in order, each once; a marker beyond the
    ``passages`` given cites nothing."""
    return sorted({int(n) for n in _MARKER.findall(text) if 1 <= int(n) <= passages})


def unmarked(text: str) -> str:
    """``text`` without its [n] markers (and the spaces before them), trimmed of spaces and
    quotes: the words of an answer, to which the markers of the passages it cites are added
    again. The words of a prefix are a prefix of the whole's words (so a stream can show
    them as they come) unless the prefix ends inside a marker."""
    clean = re.sub(r"\s*" + _MARKER.pattern, "", text).strip()
    return re.sub(r"\s+([.,;:!?。，])", r"\1", clean).strip(" \"'")


class CitingMixin:
    """Answers with citations for RagService (which supplies ``config``)."""

    if TYPE_CHECKING:
        config: RagConfig

    def _citations(self, plan: _Plan, used: list[int]) -> tuple[Citation, ...]:
        return tuple(Citation.of(n, plan.passages[n - 1]) for n in used)

    def _compose(self, plan: _Plan, raw: str) -> Answer:
        """Turn a written answer into an Answer: keep only [n] markers of given passages."""
        if plan.kind == "closed":
            return self._answer(plan, raw.strip(), ())
        texts = [h.text for h in plan.passages]
        # The answer is its first line; a small model goes on ("The answer is: ...").
        raw = next((line for line in raw.strip().splitlines() if line.strip()), "")
        raw = raw.replace("\ufffd", "")  # a character cut by max_new_tokens
        used = cited(raw, len(texts))
        clean = unmarked(raw)
        idx, ground = best_grounding(clean, texts, plan.q.text)
        if ground < self.config.min_grounding:
            # The best passage that states something: one that asks a question, or points
            # to a link, is no answer and is not repeated as one (it may be a document's
            # instructions to the reader).
            quotable = [n for n, t in enumerate(texts)
                        if not LINK.search(t) and not t.rstrip().endswith(("?", "？"))]
            log.info("answer %r is not grounded (%.2f); answering with %s", clean, ground,
                     "the best passage" if quotable else "an abstention")
            if not quotable:
                return self._answer(plan, _abstain_text(plan.q.text), (), abstained=True)
            return self._cited(plan, texts[quotable[0]], [quotable[0] + 1])
        return self._cited(plan, clean, used or [idx + 1])

    def _cited(self, plan: _Plan, text: str, used: list[int]) -> Answer:
        marks = "".join(f"[{n}]" for n in used)
        return self._answer(plan, f"{text} {marks}", self._citations(plan, used))

    def _answer(self, plan: _Plan, text: str, citations: tuple[Citation, ...],
                abstained: bool = False) -> Answer:
        images = tuple(dict.fromkeys(
            str(plan.passages[c.n - 1].meta["image_id"]) for c in citations
            if plan.passages[c.n - 1].meta.get("image_id")))
        timings = dict(plan.timings)
        timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s"))
        return Answer(text=text, citations=citations, images=images,
                      adapter_version=plan.adapter_version, route=plan.route,  # type: ignore[arg-type]
                      abstained=abstained, timings=timings)
