"""RagService: question -> retrieve passages -> read or write an answer -> cite.

Answers are grounded by design, and no list of relations, question phrasings or domain words
takes part: what a question asks and which words answer it is the models' judgement.

``read`` (the default): the reader model (:mod:`kinject.rag.reader`) weighs the best retrieved
passages by how much each makes the question more likely (question-PMI), reads the one most
about the question and replies with the words that answer it, or abstains when no passage is
about it. ``free``: the generator writes from the best passages (also how route ``both``
answers, with the adapter's own knowledge); it abstains when no passage's cosine with the
question reaches ``min_relevance``, and an answer whose words are not in the passages falls
back to the best passage itself.

Concurrent ``ask`` calls are gathered for ``batch_window_ms`` and run as one batch: one
search call for their passages, one model call for their answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kinject.protocols import BatchRetriever, Retriever
from kinject.protocols import Generator as LanguageModel
from kinject.rag import generate as gen
from kinject.rag.batching import MicroBatcher
from kinject.rag.cache import AnswerCache, normalise_question
from kinject.rag.citing import CitingMixin
from kinject.rag.prompt import closed_book_messages, rag_messages
from kinject.rag.questions import (
    _CJK,
    ABSTAIN_TEXT,
    ABSTAIN_TEXT_ZH,
    MODES,
    Mode,
    Question,
    RagConfig,
    _abstain_text,
    _Plan,
    check_mode,
)
from kinject.rag.reader import Reader, Reading
from kinject.rag.routes import AdapterProvider, check_route, no_adapter, resolve_auto
from kinject.rag.streaming import StreamingMixin
from kinject.types import Answer, Hit

if TYPE_CHECKING:
    from kinject.index.filters import SearchFilters

__all__ = ["ABSTAIN_TEXT", "ABSTAIN_TEXT_ZH", "MODES", "Mode", "Question", "RagConfig",
           "RagService", "check_mode"]

log = logging.getLogger(__name__)


class RagService(StreamingMixin, CitingMixin):
    """Answers questions over a TextIndex with the reader model (``read``) or a causal LM
    (``models.LoadedGenerator``: ``free``, route ``adapter`` and ``both``)."""

    def __init__(self, index: Retriever, generator: LanguageModel, config: RagConfig | None = None,
                 adapter: AdapterProvider | None = None,
                 reader: Callable[[], Reader] | None = None) -> None:
        self.index = index
        self.generator = generator
        self.config = config or RagConfig()
        self.adapter = adapter or no_adapter
        # read mode's reader model, loaded on the first question that needs it.
        self._reader_factory = reader
        self._reader: Reader | None = None
        self._reader_lock = threading.Lock()
        self.cache = AnswerCache(self.config.cache_size)
        self.model_calls = 0  # batched model invocations (a batch counts once)
        self._batcher: MicroBatcher[Question, Answer] = MicroBatcher(
            self._answer_batch, self.config.batch_window_ms, self.config.max_batch)

    # -- public -------------------------------------------------------------------------------
    def ask(self, question: str, k: int | None = None, filters: SearchFilters | None = None,
            route: str = "auto", mode: Mode | None = None,
            sampling: gen.Sampling | None = None, context: Sequence[str] = ()) -> Answer:
        """Answer ``question``; ``context``: a conversation's earlier user turns (Question)."""
        q = self._question(question, k, filters, route, mode, sampling, context)
        if sampling is not None:  # a sample: alone (one decoding per batch), not cached
            return self._answer_batch([q])[0]
        key = self._cache_key(q)
        cached = self.cache.get(key)
        if cached is not None:
            return replace(cached, timings={**cached.timings, "cached": 1.0})
        answer = self._batcher.submit(q)
        self.cache.put(_written_by(key, answer), answer)
        return answer

    # -- preparing ----------------------------------------------------------------------------
    def _question(self, question: str, k: int | None, filters: SearchFilters | None,
                  route: str, mode: str | None,
                  sampling: gen.Sampling | None = None,
                  context: Sequence[str] = ()) -> Question:
        question = question.strip()
        if not question:
            raise ValueError("question must not be empty")
        k = k or self.config.k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        turns = tuple(t.strip() for t in context if t.strip())
        return Question(question, k, filters, check_route(route),
                        check_mode(mode or self.config.mode), sampling, turns)

    def _cache_key(self, q: Question) -> tuple[Any, ...]:
        # The context too: a follow-up's words ask about another thing in another chat.
        return (normalise_question(q.text), tuple(map(normalise_question, q.context)),
                q.k, q.filters, q.route, q.mode,
                self._index_version(), self.adapter().version)

    def _index_version(self) -> Any:
        store = getattr(self.index, "docstore", None)
        return store.generation() if store is not None else len(self.index)

    def _answer_batch(self, questions: Sequence[Question]) -> list[Answer]:
        return self._finish(self._plan(questions))

    def _plan(self, questions: Sequence[Question]) -> list[_Plan]:
        cfg = self.config
        state = self.adapter()
        t0 = time.perf_counter()
        found = self._retrieve(questions)
        retrieve_s = (time.perf_counter() - t0) / max(1, len(questions))
        plans: list[_Plan] = []
        for q, hits in zip(questions, found, strict=True):
            plan = _Plan(q, q.route, state.version, timings={"retrieve_s": retrieve_s},
                         generator=state.generator)
            plans.append(plan)
            passages = _distinct_passages(hits)[: q.k]
            # The passages close enough to the question to be about it (cosine).
            relevant = {h.source_id for h in passages if h.score >= cfg.min_relevance}
            if plan.route == "auto":
                plan.route = resolve_auto(state, bool(relevant), relevant)
            if plan.route == "adapter" or (plan.route == "both" and not relevant):
                plan.kind, plan.route = "closed", "adapter"
                # Closed book, only the conversation says what a follow-up asks about.
                plan.messages = closed_book_messages(q.search_text)
                plan.max_new_tokens = self._budget(q.text, [])
            elif q.mode == "read" and plan.route == "rag":
                # The reader weighs the passages itself and says when none answers: all
                # retrieved ones for the units naming what is asked, the first
                # reader_passages when the question names nothing.
                plan.kind, plan.passages = "read", passages
            elif relevant:  # free mode, or route both with the adapter's knowledge
                plan.kind, plan.passages = "free", passages[: cfg.reader_passages]
                texts = [h.text for h in plan.passages]
                # A terse prompt for answers from the passages; a fuller one when the
                # adapter's own knowledge joins in (route both).
                plan.messages = rag_messages(q.text, texts, free=plan.route == "both")
                plan.max_new_tokens = self._budget(q.text, texts)
        return plans

    def _retrieve(self, questions: Sequence[Question]) -> list[list[Hit]]:
        """Every question's hits; questions asking alike (depth, filters) share one search
        call, so their embeddings are computed together."""
        out: list[list[Hit]] = [[] for _ in questions]
        groups: list[tuple[int, SearchFilters | None, list[int]]] = []
        for i, q in enumerate(questions):
            if q.route == "adapter":
                continue
            for g_k, g_filters, members in groups:
                if g_k == q.k and g_filters == q.filters:
                    members.append(i)
                    break
            else:
                groups.append((q.k, q.filters, [i]))
        mode = self.config.search_mode
        index = self.index
        for k, filters, members in groups:
            texts = [questions[i].search_text for i in members]
            if isinstance(index, BatchRetriever):
                results = index.search_many(texts, k, filters=filters, mode=mode)
            else:  # an index without batch search (a user's own): one call a question
                results = [self.index.search(t, k, filters=filters, mode=mode) for t in texts]
            for i, hits in zip(members, results, strict=True):
                out[i] = hits
        return out

    def _budget(self, question: str, passages: list[str]) -> int:
        """max_new_tokens for an answer of ``max_answer_chars`` characters in this language."""
        tok = self.generator.tokenizer
        sample = " ".join(passages) or question
        per_char = len(tok.encode(sample, add_special_tokens=False)) / max(1, len(sample))
        if _CJK.search(question):  # a Chinese answer is shorter in characters
            chars = max(16, self.config.max_answer_chars // 3)
        else:
            chars = self.config.max_answer_chars
        return max(8, math.ceil(chars * per_char) + 4)

    # -- answering ----------------------------------------------------------------------------
    def _finish(self, plans: list[_Plan]) -> list[Answer]:
        writes = [p for p in plans if p.kind in ("free", "closed")]
        reads = [p for p in plans if p.kind == "read" and p.passages]
        readings: dict[int, Reading] = {}
        if reads:
            t0 = time.perf_counter()
            reader = self._reader_model()
            self.model_calls += 1
            before = getattr(reader, "calls", 0)
            got = reader.read([p.q.text for p in reads],
                              [[h.text for h in p.passages] for p in reads],
                              weigh=self.config.reader_passages,
                              contexts=[p.q.context for p in reads])
            dt = (time.perf_counter() - t0) / len(reads)
            # The reader's own model calls for this batch (each one a pass over every core).
            calls = float(getattr(reader, "calls", 0) - before)
            stages = getattr(reader, "stage_s", {})
            for p, got_one in zip(reads, got, strict=True):
                readings[id(p)] = got_one
                p.timings["generate_s"] = dt
                p.timings["reader_calls"] = calls
                p.timings.update({f"reader_{k}": v for k, v in stages.items()})
        texts: dict[int, str] = {}
        if writes:
            t0 = time.perf_counter()
            self.model_calls += 1
            # A sampled question runs alone (ask), so its batch has one decoding.
            # One _plan's plans: one adapter state, the version their answers name.
            outs = gen.generate_batch(writes[0].generator or self.generator,
                                      [p.messages for p in writes],
                                      [p.max_new_tokens for p in writes], writes[0].q.sampling)
            dt = (time.perf_counter() - t0) / len(writes)
            for p, text in zip(writes, outs, strict=True):
                texts[id(p)] = text
                p.timings["generate_s"] = dt
        answers = []
        for p in plans:
            reading = readings.get(id(p))
            if p.kind in ("free", "closed"):
                answers.append(self._compose(p, texts[id(p)]))
            elif reading is not None and reading.answered:
                answers.append(self._cited(p, reading.text, [reading.passage + 1]))
            else:
                answers.append(self._answer(p, _abstain_text(p.q.text), (), abstained=True))
        return answers

    def _reader_model(self) -> Reader:
        with self._reader_lock:
            if self._reader is None:
                if self._reader_factory is None:
                    raise ValueError("mode 'read' needs a reader model (models.reader)")
                self._reader = self._reader_factory()
            return self._reader


def _written_by(key: tuple[Any, ...], answer: Answer) -> tuple[Any, ...]:
    """A cache key (adapter version last) with the version that wrote ``answer``: one
    promoted while it was answered must not find it cached as its own."""
    return (*key[:-1], answer.adapter_version)


def _distinct_passages(hits: list[Hit]) -> list[Hit]:
    """Each retrieved passage once (a passage found in two spaces comes back twice), in the
    order retrieval ranked them."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.chunk_id not in seen:
            seen.add(h.chunk_id)
            out.append(h)
    return out
