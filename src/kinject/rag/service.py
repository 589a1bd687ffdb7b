"""RagService: question -> retrieve passages -> select sentences -> answer -> cite.

Answers are grounded by design. Retrieval keeps only passages that name what the question
names (so the reader cannot mix up two people), the reader sees the answer-bearing sentences
numbered and fenced as data, and in ``span`` mode (the default) the answer is the span of
those sentences that the model finds most likely, so every answer is a quote of the passage
it cites. ``free`` mode lets the model write (for questions that need synthesis); an answer
whose words are not in the passages falls back to the best sentence itself.

Concurrent ``ask`` calls are gathered for ``batch_window_ms`` and run as one batch: one
embedding call for their sentence selection, one model call for their answers.
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

import numpy as np

from kinject.rag import generate as gen
from kinject.rag.batching import MicroBatcher
from kinject.rag.cache import AnswerCache, normalise_question
from kinject.rag.extract import anchored, clause_spans, clauses_of, mask_names, type_prior
from kinject.rag.prompt import closed_book_messages, rag_messages
from kinject.rag.questions import QuestionInfo, analyse
from kinject.rag.reader import Reader, Reading
from kinject.rag.routes import AdapterProvider, check_route, no_adapter, resolve_auto
from kinject.rag.sentences import (
    LINK,
    Candidate,
    best_grounding,
    covers,
    overlap,
    reading_units,
    tokens,
)
from kinject.rag.topics import clause_topics, topic_match
from kinject.types import Answer, Citation, Hit

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.index.filters import SearchFilters
    from kinject.index.text_index import TextIndex

log = logging.getLogger(__name__)

ABSTAIN_TEXT = "Not in the knowledge base."
ABSTAIN_TEXT_ZH = "知识库中没有相关内容。"
_CJK = re.compile(r"[\u3400-\u9fff]")
_MARKER = re.compile(r"\[(\d+)\]")

Mode = Literal["auto", "span", "free", "read"]
MODES = ("auto", "span", "free", "read")


@dataclass(frozen=True)
class RagConfig:
    k: int = 4
    max_sentences: int = 2
    # Below this cosine between the question and its best sentence nothing is relevant.
    min_relevance: float = 0.25
    # For a question that names someone or something, only passages naming it are kept, so
    # its bar is min_relevance * named_relevance; and k * name_fetch hits are looked at.
    named_relevance: float = 0.5
    name_fetch: int = 3
    # A question answered by writing (why, how, yes/no) that names nothing has no name to
    # anchor its passages, and a written answer from an unrelated one is worse than a quote:
    # its bar is min_relevance * written_relevance (0.35). Measured with MiniLM over the demo
    # knowledge base: answerable questions 0.43-0.81 (unnamed written ones 0.55-0.81),
    # unrelated ones 0.00-0.31 ("Why is the sky blue?" 0.24; over a lone passage about a blue
    # stone 0.26, above the plain bar of 0.25).
    written_relevance: float = 1.4
    # Below this share of answer words found in the passages a free answer is not grounded.
    min_grounding: float = 0.5
    mode: Mode = "auto"
    # Longest answer in characters; max_new_tokens follows from the passages' own
    # tokens-per-character (Chinese needs several tokens a character).
    max_answer_chars: int = 160
    max_candidates: int = 48
    # The best spans by context are re-ranked with the model's likelihood (0/1: off).
    lm_rerank: int = 3
    lm_weight: float = 0.1
    lm_margin: float = 0.15  # the model is asked only when the best spans are this close
    # Span scores: clause match (cosine + overlap_weight * word overlap) + type_weight * the
    # answer-type prior; sentences further than sentence_margin behind the best are dropped.
    overlap_weight: float = 0.5
    # A clause that states the relation the question asks about ("born in" for "birthplace",
    # rag.topics) gains topic_weight; one that states only other relations loses it.
    topic_weight: float = 0.5
    type_weight: float = 0.3
    anchor_weight: float = 0.2  # a span right after the words the question asks with
    sentence_margin: float = 0.15
    span_sentences: int = 4  # sentences searched for spans
    search_mode: str = "hybrid"
    cache_size: int = 256
    batch_window_ms: float = 0.0
    max_batch: int = 16
    # read mode: passages the reader model reads, one prompt each (rag/reader.py).
    reader_passages: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> RagConfig:
        r = settings.rag
        return cls(k=r.k, max_sentences=r.max_sentences, min_relevance=r.min_relevance,
                   mode=r.mode, max_answer_chars=r.max_answer_chars, lm_rerank=r.lm_rerank,
                   search_mode=settings.index.search_mode, cache_size=r.cache_size,
                   batch_window_ms=r.batch_window_ms, max_batch=r.max_batch,
                   reader_passages=r.reader_passages)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {self.max_sentences}")
        if not 0.0 <= self.min_grounding <= 1.0:
            raise ValueError(f"min_grounding must be in [0, 1], got {self.min_grounding}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {self.max_answer_chars}")


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
    """What a question needs from the model, worked out before any model runs."""

    q: Question
    route: str
    adapter_version: str | None
    passages: list[Candidate] = field(default_factory=list)
    abstain: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)
    spans: list[tuple[str, int, str]] = field(default_factory=list)  # text, passage, context
    kind: Literal["abstain", "span", "free", "closed", "read"] = "abstain"
    max_new_tokens: int = 32
    timings: dict[str, float] = field(default_factory=dict)
    info: QuestionInfo | None = None
    clause_rel: dict[str, float] = field(default_factory=dict)  # clause -> match with question


@dataclass(frozen=True)
class _Selection:
    info: QuestionInfo
    chosen: list[Candidate]  # answer-bearing sentences, best first
    ranked: list[Candidate]  # every distinct sentence, best first
    relevance: float  # the best plain cosine between the question and a sentence
    clause_rel: dict[str, float]


def _abstain_text(question: str) -> str:
    return ABSTAIN_TEXT_ZH if _CJK.search(question) else ABSTAIN_TEXT


class RagService:
    """Answers questions over a TextIndex with a causal LM (``models.LoadedGenerator``)."""

    def __init__(self, index: TextIndex, generator: Any, config: RagConfig | None = None,
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

        Span answers are chosen whole, so they arrive as one piece. A free answer that turns
        out ungrounded is replaced in the final Answer by the sentence it falls back to.
        """
        q = self._question(question, k, filters, route, mode, sampling)
        cached = None if sampling is not None else self.cache.get(self._cache_key(q))
        if cached is not None:
            yield cached.text
            yield cached
            return
        plan = self._plan([q])[0]
        if plan.kind in ("abstain", "span", "read"):
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
            self.cache.put(self._cache_key(q), answer)
        yield answer

    def _stream_grounded(self, plan: _Plan) -> Generator[str, None, Answer]:
        """Stream a free answer without ever showing text the final Answer takes back.

        Text is held back until what has been written is grounded in the passages (the same
        test as :meth:`_compose`, with at least two new words); from then on it flows as it is
        produced, up to the end of the first line (the answer). An answer that never becomes
        grounded is replaced by the sentence it falls back to, sent as one piece. So the
        pieces always add up to the final answer's text, as OpenAI-style clients expect.
        """
        texts = [c.sentence for c in plan.passages]
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
        return tuple(
            Citation(n=n, source_id=plan.passages[n - 1].hit.source_id,
                     chunk_id=plan.passages[n - 1].hit.chunk_id,
                     score=plan.passages[n - 1].hit.score,
                     snippet=plan.passages[n - 1].sentence)
            for n in used)

    # -- preparing ----------------------------------------------------------------------------
    def _question(self, question: str, k: int | None, filters: SearchFilters | None,
                  route: str, mode: Mode | None,
                  sampling: gen.Sampling | None = None) -> Question:
        question = question.strip()
        if not question:
            raise ValueError("question must not be empty")
        k = k or self.config.k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        mode = mode or self.config.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return Question(question, k, filters, check_route(route), mode, sampling)

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
        plans: list[_Plan] = []
        hits_of: list[list[Hit]] = []
        infos = [analyse(q.text) for q in questions]  # the names asked about, among others
        t0 = time.perf_counter()
        found = self._retrieve(questions, infos)
        retrieve_s = (time.perf_counter() - t0) / max(1, len(questions))
        for q, info, hits in zip(questions, infos, found, strict=True):
            plans.append(_Plan(q, q.route, state.version, timings={"retrieve_s": retrieve_s}))
            if q.mode == "read":  # the reader judges what a passage is about
                hits_of.append(hits[: q.k])
                continue
            hits_of.append(_about_the_question(info.terms, hits)[: q.k])
        t1 = time.perf_counter()
        # read mode needs no sentence selection: the reader model chooses among the passages.
        selections = self._select(infos, [[] if q.mode == "read" else hits
                                          for q, hits in zip(questions, hits_of, strict=True)])
        select_s = (time.perf_counter() - t1) / max(1, len(questions))
        for i, (plan, sel) in enumerate(zip(plans, selections, strict=True)):
            plan.timings["select_s"] = select_s
            q, chosen = plan.q, sel.chosen
            plan.info, plan.clause_rel = sel.info, sel.clause_rel
            # Passages that name everything the question names are evidence of relevance in
            # themselves; a cosine alone must clear the full bar, and more for a written answer.
            bar = cfg.min_relevance
            if sel.info.terms:
                bar *= cfg.named_relevance
            elif sel.info.needs_writing:
                bar *= cfg.written_relevance
            relevant = bool(chosen) and sel.relevance >= bar
            if q.mode == "read":  # the reader itself says when no passage is about it
                chosen = _distinct_passages(hits_of[i])
                relevant = bool(chosen)
            if plan.route == "auto":
                plan.route = resolve_auto(state, relevant, {c.hit.source_id for c in chosen})
            if plan.route == "adapter" or (plan.route == "both" and not relevant):
                plan.kind, plan.route = "closed", "adapter"
                plan.messages = closed_book_messages(q.text)
                plan.max_new_tokens = self._budget(q.text, [])
                continue
            if q.mode == "read" and plan.route == "rag":
                # The reader reads whole passages, best retrieved first, and says itself
                # when none of them answers.
                plan.kind = "read"
                plan.passages = chosen
                continue
            if not relevant:
                plan.kind = "abstain"
                continue
            # auto: quote a span for a factoid question, write for one that needs words of
            # its own (why, how, describe, yes/no) and whenever the adapter's knowledge joins.
            free = (q.mode == "free" or plan.route == "both"
                    or (q.mode == "auto" and sel.info.needs_writing))
            # The writer reads the few best sentences; spans are sought in more of them, since
            # a span's own clause and answer type weigh in beyond the sentence's rank.
            if q.mode == "read":  # the generator writes (route both) from the best passages
                chosen = chosen[: cfg.reader_passages]
            plan.passages = list(chosen) if free else _on_topic(sel)[: cfg.span_sentences]
            texts = [c.sentence for c in plan.passages]
            # A terse prompt for answers from the passages; a fuller one when the adapter's
            # own knowledge joins in (both) or the question asks for an explanation.
            plan.messages = rag_messages(q.text, texts, free=plan.route == "both"
                                         or (free and sel.info.needs_writing))
            if free:
                plan.kind = "free"
                plan.max_new_tokens = self._budget(q.text, texts)
            else:
                plan.kind = "span"
                spans = clause_spans(texts, sel.info)[: cfg.max_candidates]
                plan.spans = [(s.text, s.sentence, s.clause) for s in spans]
                if not plan.spans:  # nothing but the question's own words: quote the sentence
                    plan.spans = [(texts[0], 0, texts[0])]
        return plans

    def _retrieve(self, questions: Sequence[Question], infos: Sequence[QuestionInfo]
                  ) -> list[list[Hit]]:
        """Every question's hits; questions asking alike (depth, filters) share one search
        call, so their embeddings are computed together. A question that names someone is
        looked up ``name_fetch`` times wider, then narrowed to passages that name them (by
        the caller): a rare name ranks below common ones in BM25 and in the embedder."""
        cfg = self.config
        out: list[list[Hit]] = [[] for _ in questions]
        groups: list[tuple[int, SearchFilters | None, list[int]]] = []
        for i, (q, info) in enumerate(zip(questions, infos, strict=True)):
            if q.route == "adapter":
                continue
            fetch = q.k * cfg.name_fetch if info.terms else q.k
            for g_fetch, g_filters, members in groups:
                if g_fetch == fetch and g_filters == q.filters:
                    members.append(i)
                    break
            else:
                groups.append((fetch, q.filters, [i]))
        many = getattr(self.index, "search_many", None)
        for fetch, filters, members in groups:
            texts = [questions[i].text for i in members]
            if many is not None:
                results = many(texts, fetch, filters=filters, mode=cfg.search_mode)
            else:  # an index without batch search (a user's own): one call a question
                results = [self.index.search(t, fetch, filters=filters, mode=cfg.search_mode)
                           for t in texts]
            for i, hits in zip(members, results, strict=True):
                out[i] = hits
        return out

    def _embedder_for(self, info: QuestionInfo) -> Any:
        """The multilingual embedder for a Chinese question when the index has one (MiniLM
        is English-only), else the index's own."""
        zh = getattr(self.index, "zh_embedder", None)
        return zh if info.lang == "zh" and zh is not None else self.index.embedder

    def _select(self, infos: list[QuestionInfo], hits_of: list[list[Hit]]) -> list[_Selection]:
        """Per question, its answer-bearing sentences, best first.

        A sentence scores by its cosine with the question plus its best clause's match with
        what the question asks (the question's words without its names, against the clause's
        words without them: by the embedder and by stemmed word overlap). So "Which town did
        Ada move to?" picks "In 1990 Ada moved to Osk" over "Ada Quill was born in Vask",
        though the latter shares more of the question's words (her full name). One embedding
        call per embedder covers every question of the batch and all their units.
        """
        cfg = self.config
        units = [[(u, h) for h in hits for u in reading_units(h)] for hits in hits_of]
        clauses = [clauses_of([u for u, _ in us]) for us in units]
        jobs: dict[int, tuple[Any, list[str]]] = {}
        rows: list[tuple[int, int]] = []
        for info, us, cs in zip(infos, units, clauses, strict=True):
            emb = self._embedder_for(info)
            texts = jobs.setdefault(id(emb), (emb, []))[1]
            rows.append((id(emb), len(texts)))
            texts += [info.text, info.asked or info.text] + [u for u, _ in us]
            texts += [mask_names(c, info.terms) for _, c in cs]
        vecs = {key: emb.encode(texts) for key, (emb, texts) in jobs.items() if texts}
        out: list[_Selection] = []
        for info, us, cs, (key, row) in zip(infos, units, clauses, rows, strict=True):
            if not us:
                out.append(_Selection(info, [], [], 0.0, {}))
                continue
            v = vecs[key][row: row + 2 + len(us) + len(cs)]
            qv, av, uv, cv = v[0], v[1], v[2: 2 + len(us)], v[2 + len(us):]
            sims = uv @ qv
            rel: dict[str, float] = {}
            best_of = [-1.0] * len(us)
            for (ui, clause), csim in zip(cs, cv @ av, strict=True):
                topical = topic_match(info.topics, clause_topics(clause, info.lang))
                r = (float(csim) + cfg.overlap_weight * overlap(info.asked, clause)
                     + cfg.topic_weight * topical)
                rel[clause] = max(rel.get(clause, -1.0), r)
                best_of[ui] = max(best_of[ui], r)
            scored = [Candidate(u, h, float(sim) + best)
                      for (u, h), sim, best in zip(us, sims, best_of, strict=True)]
            scored.sort(key=lambda c: c.score, reverse=True)
            ranked: list[Candidate] = []
            for c in scored:
                if all(c.sentence != r.sentence for r in ranked):
                    ranked.append(c)
            # A runner-up far behind the best only gives the reader something to confuse.
            chosen = [c for c in ranked[: cfg.max_sentences]
                      if c.score >= ranked[0].score - cfg.sentence_margin]
            out.append(_Selection(info, chosen, ranked, float(sims.max()), rel))
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
        spans = [p for p in plans if p.kind == "span"]
        writes = [p for p in plans if p.kind in ("free", "closed")]
        reads = [p for p in plans if p.kind == "read"]
        readings: dict[int, Reading] = {}
        if reads:
            t0 = time.perf_counter()
            reader = self._reader_model()
            self.model_calls += 1
            got = reader.read([p.q.text for p in reads],
                              [[c.sentence for c in p.passages[: self.config.reader_passages]]
                               for p in reads])
            dt = (time.perf_counter() - t0) / len(reads)
            for p, reading in zip(reads, got, strict=True):
                readings[id(p)] = reading
                p.timings["generate_s"] = dt
        scores: dict[int, list[float]] = {}
        texts: dict[int, str] = {}
        if spans:
            t0 = time.perf_counter()
            for p, r in zip(spans, self._score_spans(spans), strict=True):
                scores[id(p)] = r
            dt = (time.perf_counter() - t0) / len(spans)
            for p in spans:
                p.timings["generate_s"] = dt
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
            if p.kind == "span":
                r = scores[id(p)]
                best = int(np.argmax(r))
                text, idx, _ = p.spans[best]
                answers.append(self._cited(p, text, [idx + 1]))
            elif p.kind in ("free", "closed"):
                answers.append(self._compose(p, texts[id(p)]))
            elif p.kind == "read" and readings[id(p)].answered:
                reading = readings[id(p)]
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

    def _score_spans(self, plans: list[_Plan]) -> list[list[float]]:
        """Score every candidate span of every plan; the best one is the answer.

        A span is as good as its clause matches what the question asks ("born in ~" for
        "birthplace", scored in :meth:`_select`), how well it fits the expected kind of answer
        (a year for "when"), and, for the few best, how much the question raises the model's
        likelihood of it (PMI).
        """
        cfg = self.config
        out = []
        for p in plans:
            scores = []
            for text, idx, clause in p.spans:
                rel = p.clause_rel.get(clause, 0.0)
                prior = anchor = 0.0
                if p.info is not None:
                    prior = type_prior(text, clause, p.info)
                    anchor = float(anchored(text, clause, p.info))
                scores.append(rel + cfg.type_weight * prior + cfg.anchor_weight * anchor
                              - 0.02 * idx)
            out.append(scores)
        if cfg.lm_rerank > 1:
            self._rerank_with_lm(plans, out, cfg.lm_rerank)
        return out

    def _rerank_with_lm(self, plans: list[_Plan], scores: list[list[float]], top_n: int) -> None:
        """Add the model's say to the ``top_n`` spans of each plan whose best spans are close
        (within ``lm_margin``): log P(span | their sentences, question) - 0.5 log P(span |
        their sentences), in one scoring call for the batch. Clear winners skip the model:
        a prompt's prefill is most of a question's time on a CPU."""
        cfg = self.config
        reqs, tops = [], []
        for p, sc in zip(plans, scores, strict=True):
            top = sorted(range(len(sc)), key=lambda i: sc[i], reverse=True)[:top_n]
            if len(top) < 2 or sc[top[0]] - sc[top[1]] > cfg.lm_margin:
                continue
            tops.append((top, sc))
            cands = [p.spans[i][0] for i in top]
            held = sorted({p.spans[i][1] for i in top})
            texts = [p.passages[i].sentence for i in held]
            reqs += [(rag_messages(p.q.text, texts), cands), (rag_messages("?", texts), cands)]
        if not reqs:
            return
        self.model_calls += 1
        res = gen.score_continuations(self.generator, reqs)
        for i, (top, sc) in enumerate(tops):
            pmi = [a - 0.5 * b for a, b in zip(res[2 * i], res[2 * i + 1], strict=True)]
            best = max(pmi)
            for j, v in zip(top, pmi, strict=True):
                sc[j] += cfg.lm_weight * (v - best)

    def _compose(self, plan: _Plan, raw: str) -> Answer:
        """Turn a written answer into an Answer: keep only [n] markers of given passages."""
        if plan.kind == "closed":
            return self._answer(plan, raw.strip(), ())
        texts = [c.sentence for c in plan.passages]
        # The answer is its first line; a small model goes on ("The answer is: ...").
        raw = next((line for line in raw.strip().splitlines() if line.strip()), "")
        raw = raw.replace("\ufffd", "")  # a character cut by max_new_tokens
        used = sorted({int(n) for n in _MARKER.findall(raw) if 1 <= int(n) <= len(texts)})
        clean = _MARKER.sub("", raw).strip()
        clean = re.sub(r"\s+([.,;:!?。，])", r"\1", clean).strip(" \"'")
        idx, ground = best_grounding(clean, texts, plan.q.text)
        if ground < self.config.min_grounding:
            # The best sentence that states something: one that asks a question, or points
            # to a link, is no answer and is not repeated as one (it may be a document's
            # instructions to the reader).
            quotable = [n for n, t in enumerate(texts)
                        if not LINK.search(t) and not t.rstrip().endswith(("?", "？"))]
            log.info("answer %r is not grounded (%.2f); answering with %s", clean, ground,
                     "the best sentence" if quotable else "an abstention")
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
            str(plan.passages[c.n - 1].hit.meta["image_id"]) for c in citations
            if plan.passages[c.n - 1].hit.meta.get("image_id")))
        timings = dict(plan.timings)
        timings["total_s"] = sum(timings.values())
        return Answer(text=text, citations=citations, images=images,
                      adapter_version=plan.adapter_version, route=plan.route,  # type: ignore[arg-type]
                      abstained=abstained, timings=timings)


def _distinct_passages(hits: list[Hit]) -> list[Candidate]:
    """Each retrieved passage once (a passage found in two spaces comes back twice), in the
    order retrieval ranked them."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.chunk_id not in seen:
            seen.add(h.chunk_id)
            out.append(Candidate(h.text, h, h.score))
    return out


def _on_topic(sel: _Selection) -> list[Candidate]:
    """The ranked units whose chunk names everything the question names, when any does.

    Spans are scored by what the question asks without its names ("keeper" of "Who keeps
    the Gullspire light?"), so a table's other rows, each with its own keeper, would score
    as well; the chunk is the unit that says whose row it is (a sentence may say "she")."""
    terms = sel.info.terms
    if not terms:
        return sel.ranked
    about = [c for c in sel.ranked if covers(c.hit.text, set(terms))]
    return about or sel.ranked


def _about_the_question(terms: frozenset[str], hits: list[Hit]) -> list[Hit]:
    """The hits from sources that mention every name the question names (``terms``; all of
    them when it names nothing). "Brenna Hollis" is not answered from "Brenna Kettering"."""
    if not terms or not hits:
        return hits
    text_of: dict[str, str] = {}
    for h in hits:
        text_of[h.source_id] = text_of.get(h.source_id, "") + " " + h.text
    keep = {s for s, t in text_of.items() if covers(t, set(terms))}
    return [h for h in hits if h.source_id in keep]
