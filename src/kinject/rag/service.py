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
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from kinject.protocols import Generator as LanguageModel
from kinject.protocols import Retriever
from kinject.rag import generate as gen
from kinject.rag.batching import MicroBatcher
from kinject.rag.cache import AnswerCache, normalise_question
from kinject.rag.prompt import closed_book_messages, rag_messages
from kinject.rag.reader import Reader, Reading
from kinject.rag.routes import AdapterProvider, check_route, no_adapter, resolve_auto
from kinject.rag.sentences import LINK, best_grounding, tokens
from kinject.types import Answer, Citation, Hit

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.index.filters import SearchFilters

log = logging.getLogger(__name__)

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
    # Passages the reader weighs (one prompt each), or the generator writes from (free).
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


def _abstain_text(question: str) -> str:
    return ABSTAIN_TEXT_ZH if _CJK.search(question) else ABSTAIN_TEXT


class RagService:
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
            sampling: gen.Sampling | None = None) -> Answer:
        q = self._question(question, k, filters, route, mode, sampling)
        if sampling is not None:  # a sample: alone (one decoding per batch), not cached
            return self._answer_batch([q])[0]
        key = self._cache_key(q)
        cached = self.cache.get(key)
        if cached is not None:
            return replace(cached, timings={**cached.timings, "cached": 1.0})
        answer = self._batcher.submit(q)
        self.cache.put(key, answer)
        return answer

    def ask_stream(self, question: str, k: int | None = None,
                   filters: SearchFilters | None = None, route: str = "auto",
                   mode: Mode | None = None, sampling: gen.Sampling | None = None
                   ) -> Iterator[str | Answer]:
        """Yield the answer's text in pieces as it is produced, then the final ``Answer``.

        A reader's answer is chosen whole, so it arrives as one piece. A free answer that
        turns out ungrounded is replaced in the final Answer by the passage it falls back to.
        """
        q = self._question(question, k, filters, route, mode, sampling)
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
            for piece in gen.stream_chat(self.generator, plan.messages, plan.max_new_tokens,
                                         q.sampling):
                if piece:
                    pieces.append(piece)
                    yield piece
            plan.timings["generate_s"] = time.perf_counter() - t0
            answer = self._compose(plan, "".join(pieces))
        else:
            answer = yield from self._stream_grounded(plan)
        if sampling is None:
            self.cache.put(key, answer)
        yield answer

    def _stream_grounded(self, plan: _Plan) -> Generator[str, None, Answer]:
        """Stream a free answer without ever showing text the final Answer takes back.

        Text is held back until what has been written is grounded in the passages (the same
        test as :meth:`_compose`, with at least two new words); from then on it flows as it is
        produced, up to the end of the first line (the answer). An answer that never becomes
        grounded is replaced by the passage it falls back to, sent as one piece. So the
        pieces always add up to the final answer's text, as OpenAI-style clients expect.
        """
        texts = [h.text for h in plan.passages]
        asked = tokens(plan.q.text)
        t0 = time.perf_counter()
        self.model_calls += 1
        written, released, grounded = "", 0, False
        for piece in gen.stream_chat(self.generator, plan.messages, plan.max_new_tokens,
                                     plan.q.sampling):
            if not piece or "\n" in written.lstrip():
                continue  # past the first line: drained, not shown
            written += piece
            line = written.lstrip().split("\n", 1)[0].replace("\ufffd", "")
            if not grounded:
                clean = _MARKER.sub("", line)
                grounded = (len(tokens(clean) - asked) >= 2 and best_grounding(
                    clean, texts, plan.q.text)[1] >= self.config.min_grounding)
            shown = line.rstrip()  # trailing spaces wait: the line may end there
            if grounded and len(shown) > released:
                yield shown[released:]
                released = len(shown)
        plan.timings["generate_s"] = time.perf_counter() - t0
        line = written.lstrip().split("\n", 1)[0].replace("\ufffd", "").rstrip()
        if not grounded:
            answer = self._compose(plan, line)
            yield answer.text
            return answer
        used = sorted({int(n) for n in _MARKER.findall(line) if 1 <= int(n) <= len(texts)})
        if used:  # the model cited: its words stand as written
            return self._answer(plan, line.strip(), self._citations(plan, used))
        idx, _ = best_grounding(_MARKER.sub("", line), texts, plan.q.text)
        yield f" [{idx + 1}]"
        return self._answer(plan, f"{line.strip()} [{idx + 1}]", self._citations(plan, [idx + 1]))

    def _citations(self, plan: _Plan, used: list[int]) -> tuple[Citation, ...]:
        return tuple(Citation.of(n, plan.passages[n - 1]) for n in used)

    # -- preparing ----------------------------------------------------------------------------
    def _question(self, question: str, k: int | None, filters: SearchFilters | None,
                  route: str, mode: str | None,
                  sampling: gen.Sampling | None = None) -> Question:
        question = question.strip()
        if not question:
            raise ValueError("question must not be empty")
        k = k or self.config.k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return Question(question, k, filters, check_route(route),
                        check_mode(mode or self.config.mode), sampling)

    def _cache_key(self, q: Question) -> tuple[Any, ...]:
        return (normalise_question(q.text), q.k, q.filters, q.route, q.mode,
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
            plan = _Plan(q, q.route, state.version, timings={"retrieve_s": retrieve_s})
            plans.append(plan)
            passages = _distinct_passages(hits)[: q.k]
            # The passages close enough to the question to be about it (cosine).
            relevant = {h.source_id for h in passages if h.score >= cfg.min_relevance}
            if plan.route == "auto":
                plan.route = resolve_auto(state, bool(relevant), relevant)
            if plan.route == "adapter" or (plan.route == "both" and not relevant):
                plan.kind, plan.route = "closed", "adapter"
                plan.messages = closed_book_messages(q.text)
                plan.max_new_tokens = self._budget(q.text, [])
            elif q.mode == "read" and plan.route == "rag":
                # The reader weighs the best passages itself and says when none answers.
                plan.kind, plan.passages = "read", passages[: cfg.reader_passages]
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
        many = getattr(self.index, "search_many", None)
        for k, filters, members in groups:
            texts = [questions[i].text for i in members]
            if many is not None:
                results = many(texts, k, filters=filters, mode=mode)
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
                              [[h.text for h in p.passages] for p in reads])
            dt = (time.perf_counter() - t0) / len(reads)
            # The reader's own model calls for this batch (each one a pass over every core).
            calls = float(getattr(reader, "calls", 0) - before)
            for p, got_one in zip(reads, got, strict=True):
                readings[id(p)] = got_one
                p.timings["generate_s"] = dt
                p.timings["reader_calls"] = calls
        texts: dict[int, str] = {}
        if writes:
            t0 = time.perf_counter()
            self.model_calls += 1
            # A sampled question runs alone (ask), so its batch has one decoding.
            outs = gen.generate_batch(self.generator, [p.messages for p in writes],
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

    def _compose(self, plan: _Plan, raw: str) -> Answer:
        """Turn a written answer into an Answer: keep only [n] markers of given passages."""
        if plan.kind == "closed":
            return self._answer(plan, raw.strip(), ())
        texts = [h.text for h in plan.passages]
        # The answer is its first line; a small model goes on ("The answer is: ...").
        raw = next((line for line in raw.strip().splitlines() if line.strip()), "")
        raw = raw.replace("\ufffd", "")  # a character cut by max_new_tokens
        used = sorted({int(n) for n in _MARKER.findall(raw) if 1 <= int(n) <= len(texts)})
        clean = _MARKER.sub("", raw).strip()
        clean = re.sub(r"\s+([.,;:!?。，])", r"\1", clean).strip(" \"'")
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
