"""RagService's streaming half: ``ask_stream`` and the grounded stream of a free answer."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kinject.rag import generate as gen
from kinject.rag.citing import cited, unmarked
from kinject.rag.questions import _MARKER, Mode, Question, RagConfig, _Plan
from kinject.rag.sentences import best_grounding, tokens
from kinject.types import Answer, Citation

if TYPE_CHECKING:
    from kinject.index.filters import SearchFilters
    from kinject.protocols import Generator as LanguageModel
    from kinject.rag.cache import AnswerCache


class StreamingMixin:
    """``ask_stream`` for RagService (which supplies the attributes declared below)."""

    if TYPE_CHECKING:
        config: RagConfig
        generator: LanguageModel
        cache: AnswerCache
        model_calls: int

        def _question(self, question: str, k: int | None, filters: SearchFilters | None,
                      route: str, mode: str | None,
                      sampling: gen.Sampling | None = None,
                      context: Sequence[str] = ()) -> Question: ...

        def _cache_key(self, q: Question) -> tuple[Any, ...]: ...

        def _plan(self, questions: Sequence[Question]) -> list[_Plan]: ...

        def _finish(self, plans: list[_Plan]) -> list[Answer]: ...

        def _compose(self, plan: _Plan, raw: str) -> Answer: ...

        def _answer(self, plan: _Plan, text: str, citations: tuple[Citation, ...],
                    abstained: bool = False) -> Answer: ...

        def _citations(self, plan: _Plan, used: list[int]) -> tuple[Citation, ...]: ...

        def _cited(self, plan: _Plan, text: str, used: list[int]) -> Answer: ...

    def ask_stream(self, question: str, k: int | None = None,
                   filters: SearchFilters | None = None, route: str = "auto",
                   mode: Mode | None = None, sampling: gen.Sampling | None = None,
                   context: Sequence[str] = ()) -> Iterator[str | Answer]:
        """Yield the answer's text in pieces as it is produced, then the final ``Answer``.

        A reader's answer is chosen whole, so it arrives as one piece. A free answer that
        turns out ungrounded is replaced in the final Answer by the passage it falls back to.
        """
        q = self._question(question, k, filters, route, mode, sampling, context)
        # Keyed by the index and adapter it is answered from: one applied meanwhile must not
        # find this answer cached as its own.
        key = self._cache_key(q)
        cached = None if sampling is not None else self.cache.get(key)
        if cached is not None:
            yield cached.text
            yield cached
            return
        plan = self._plan([q])[0]
        if plan.kind in ("abstain", "read"):
            answer = self._finish([plan])[0]
            yield answer.text
        elif plan.kind == "closed":
            t0 = time.perf_counter()
            pieces: list[str] = []
            self.model_calls += 1
            for piece in gen.stream_chat(plan.generator or self.generator, plan.messages,
                                         plan.max_new_tokens, q.sampling):
                if piece:
                    pieces.append(piece)
                    yield piece
            plan.timings["generate_s"] = time.perf_counter() - t0
            answer = self._compose(plan, "".join(pieces))
        else:
            answer = yield from self._stream_grounded(plan)
        if sampling is None:  # under the adapter version that wrote it (service._written_by)
            self.cache.put((*key[:-1], answer.adapter_version), answer)
        yield answer

    def _stream_grounded(self, plan: _Plan) -> Generator[str, None, Answer]:
        """Stream a free answer without ever showing text the final Answer takes back.

        Text is held back until what has been written is grounded in the passages (the same
        test as :meth:`_compose`, with at least two new words); from then on its words flow
        as they are produced, up to the end of the first line (the answer). The model's
        [n] markers are held back too: as in :meth:`_compose`, the final answer is the words
        followed by the markers of the given passages they cite (or of the passage they are
        grounded in), never one beyond them. An answer that never becomes grounded is
        replaced by the passage it falls back to, sent as one piece. So the pieces always
        add up to the final answer's text, as OpenAI-style clients expect.
        """
        texts = [h.text for h in plan.passages]
        asked = tokens(plan.q.text)
        t0 = time.perf_counter()
        self.model_calls += 1
        written, released, grounded = "", 0, False
        for piece in gen.stream_chat(plan.generator or self.generator, plan.messages,
                                     plan.max_new_tokens, plan.q.sampling):
            if not piece or "\n" in written.lstrip():
                continue  # past the first line: drained, not shown
            written += piece
            line = written.lstrip().split("\n", 1)[0].replace("\ufffd", "")
            if not grounded:
                clean = _MARKER.sub("", line)
                grounded = (len(tokens(clean) - asked) >= 2 and best_grounding(
                    clean, texts, plan.q.text)[1] >= self.config.min_grounding)
            shown = settled_words(line)
            if grounded and len(shown) > released:
                yield shown[released:]
                released = len(shown)
        plan.timings["generate_s"] = time.perf_counter() - t0
        line = written.lstrip().split("\n", 1)[0].replace("\ufffd", "").rstrip()
        if not grounded:
            answer = self._compose(plan, line)
            yield answer.text
            return answer
        words = unmarked(line)
        used = cited(line, len(texts)) or [best_grounding(words, texts, plan.q.text)[0] + 1]
        answer = self._cited(plan, words, used)
        yield answer.text[released:]
        return answer


def settled_words(line: str) -> str:
    """The words of a line being written that stand whatever is written next: its words
    (:func:`~kinject.rag.citing.unmarked`) but trailing spaces and quotes (the line may end
    there) and a marker not closed yet (its number is unknown). Each is a prefix of the
    next, and of the finished line's words."""
    opened = line.rfind("[")
    return unmarked(line[:opened] if opened > line.rfind("]") else line)
