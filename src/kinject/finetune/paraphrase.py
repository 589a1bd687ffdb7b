"""Paraphrases of a chunk's sentences written by the LM itself, kept only when they pass a gate.

Template rephrasings and permutations (:mod:`kinject.finetune.augment`) give every chunk
several forms for free; the LM can add freer ones (another word order, other verbs). It is
slow (about 27 tokens/s on 2 CPU cores with SmolLM2-135M) and the tiny model drifts ("Ada
Lind was born in 1990" becomes "... born in 2019"), so it is off by default
(``FinetuneSettings.lm_paraphrases = 0``), runs at cycle time for the cycle's new chunks
only, with the base model the trainer has already loaded, and every candidate passes
:func:`drop_reason` before it becomes training data:

- it keeps every name, number and date of its source (:func:`key_terms`) and adds none;
- it is not a copy of the source (case, spaces and punctuation aside);
- its length is within ``min_ratio``..``max_ratio`` of the source's;
- it is in the source's language and does not echo the instruction ("Here is", "改写").

Candidates, kept and dropped, are cached in the corpus store with their chunk and source,
so a later cycle never asks the model again and a delete removes them with the chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kinject.finetune.facts import (
    is_structured,
    lang_of,
    resolve_sentences,
    split_sentences,
    text_subject,
)
from kinject.finetune.lm_paraphraser import LmParaphraser, messages
from kinject.finetune.paraphrase_config import ParaphraseConfig, ParaphraseStats
from kinject.finetune.paraphrase_gate import _normal, clean_output, drop_reason, key_terms
from kinject.types import Chunk, TrainingExample, content_hash

if TYPE_CHECKING:
    from kinject.finetune.corpus import CorpusStore

# The settings (paraphrase_config.py), the gate (paraphrase_gate.py) and the model
# (lm_paraphraser.py) live beside this module; their names stay importable from here.
__all__ = [
    "FORM", "Candidate", "Generate", "LmParaphraser", "ParaphraseConfig", "ParaphraseStats",
    "chunk_examples", "clean_output", "drop_reason", "ensure_paraphrases", "key_terms",
    "lm_augment", "messages", "units",
]

log = logging.getLogger(__name__)

FORM = "paraphrase"
# (sentence, lang) pairs in, ``k`` candidates per pair out.
Generate = Callable[[Sequence[tuple[str, str]], int], list[list[str]]]


# -- what gets paraphrased, and the examples made of the kept ones ------------------------------
def units(chunk: Chunk, max_sentences: int = 12) -> list[str]:
    """The sentences of a text chunk worth paraphrasing: pronouns replaced by the name they
    refer to (each sentence stands alone), holding at least one key term. Structured rows
    have template rephrasings already and get none."""
    if is_structured(chunk):
        return []
    lang = lang_of(chunk)
    sentences = split_sentences(chunk.text, lang)
    subject = text_subject(chunk, sentences, lang)
    out = [s for s, _ in resolve_sentences(sentences, subject, lang) if key_terms(s, lang)]
    return out[:max_sentences]


def chunk_examples(chunk: Chunk, cycle: int, kept: dict[str, list[str]], per_sentence: int
                   ) -> list[TrainingExample]:
    """Up to ``per_sentence`` rewrites of the passage: rewrite ``v`` puts each sentence's
    ``v``-th kept paraphrase in its place (the sentence itself where it has none)."""
    lang = lang_of(chunk)
    joiner = "" if lang == "zh" else " "
    sentences = split_sentences(chunk.text, lang)
    subject = text_subject(chunk, sentences, lang)
    resolved = [s for s, _ in resolve_sentences(sentences, subject, lang)]
    out: list[TrainingExample] = []
    for v in range(per_sentence):
        body = [kept[s][v] if len(kept.get(s, ())) > v else s for s in resolved]
        if body == resolved:
            break
        text = joiner.join(body)
        out.append(TrainingExample(
            example_id=content_hash(chunk.chunk_id, FORM, text), chunk_id=chunk.chunk_id,
            source_id=chunk.source_id, prompt="", completion=text, form=FORM, cycle=cycle,
            lang=lang))
    return out


@dataclass(frozen=True)
class Candidate:
    """One generated paraphrase of one sentence of a chunk, with the gate's verdict."""

    chunk_id: str
    source_id: str
    sentence: str
    text: str
    reason: str | None  # None: kept

    @property
    def kept(self) -> bool:
        return self.reason is None


def ensure_paraphrases(corpus: CorpusStore, chunks: Sequence[tuple[Chunk, int]],
                       generate: Generate, config: ParaphraseConfig
                       ) -> tuple[list[TrainingExample], ParaphraseStats]:
    """Paraphrase examples for ``chunks`` (each with its corpus cycle): sentences the cache
    has no candidates for are sent to ``generate``, judged, and stored with their lineage;
    returns every paraphrase example of those chunks (cached ones included) and the stats."""
    t0 = time.perf_counter()
    stats = ParaphraseStats()
    n = config.per_sentence
    if n <= 0 or not chunks:
        return [], stats
    wanted = {c.chunk_id: units(c, config.max_sentences) for c, _ in chunks}
    cache = corpus.paraphrase_candidates(list(wanted))
    todo: list[tuple[Chunk, str]] = []
    for chunk, _ in chunks:
        for s in wanted[chunk.chunk_id]:
            stats.sentences += 1
            if s in cache.get(chunk.chunk_id, {}):
                stats.cached += 1
            else:
                todo.append((chunk, s))
    fresh: list[Candidate] = []
    if todo:
        outputs = generate([(s, lang_of(c)) for c, s in todo], n * config.candidates)
        for (chunk, sentence), texts in zip(todo, outputs, strict=True):
            lang = lang_of(chunk)
            seen: set[str] = set()
            for raw in texts:
                text = clean_output(raw)
                reason = drop_reason(sentence, text, lang, min_ratio=config.min_ratio,
                                     max_ratio=config.max_ratio)
                if reason is None and _normal(text) in seen:
                    reason = "duplicate"
                seen.add(_normal(text))
                fresh.append(Candidate(chunk.chunk_id, chunk.source_id, sentence, text, reason))
                stats.generated += 1
                stats.kept += reason is None
                log.debug("paraphrase %s: %r -> %r", reason or "kept", sentence, text)
    for cand in fresh:
        cache.setdefault(cand.chunk_id, {}).setdefault(cand.sentence, []).append(
            (cand.text, cand.kept))
    examples: list[TrainingExample] = []
    for chunk, cycle in chunks:
        kept = {s: [t for t, ok in cands if ok]
                for s, cands in cache.get(chunk.chunk_id, {}).items()}
        examples.extend(chunk_examples(chunk, cycle, kept, n))
    stored = corpus.add_paraphrases(fresh, examples)
    stats.seconds = time.perf_counter() - t0
    log.info("LM paraphrases: %d sentence(s), %d from the cache; %d generated now, %d kept; "
             "%d paraphrase example(s) (%d new) in %.1f s", stats.sentences, stats.cached,
             stats.generated, stats.kept, len(examples), stored, stats.seconds)
    return examples, stats


def lm_augment(corpus: CorpusStore, chunks: Sequence[tuple[Chunk, int]],
               config: ParaphraseConfig,
               on_done: Callable[[list[TrainingExample], ParaphraseStats], None] | None = None
               ) -> Callable[[Any, Any], list[TrainingExample]]:
    """The trainer's ``augment`` hook (``LoraTrainer.train``) that adds LM paraphrases of
    ``chunks``, written by the model the trainer has loaded and cached in ``corpus``.

    It is the one way paraphrases reach training: an in-process cycle
    (:mod:`kinject.finetune.jobs`) and a job file run under ``accelerate launch``
    (:mod:`kinject.finetune.launch`) both hand it to the trainer, which merges what it returns
    into the training set, so both train on the same examples. When the model cannot be asked
    (its tokenizer has no chat template) it says so in a warning and adds nothing.
    """

    def augment(tok: Any, model: Any) -> list[TrainingExample]:
        if config.per_sentence <= 0 or not chunks:
            return []
        if not getattr(tok, "chat_template", None):
            log.warning("LM paraphrases are on (%d per sentence) but the base model's tokenizer "
                        "has no chat template to ask for them: training without LM paraphrases "
                        "of %d chunk(s)", config.per_sentence, len(chunks))
            return []
        examples, stats = ensure_paraphrases(corpus, chunks, LmParaphraser(tok, model, config),
                                             config)
        if on_done is not None:
            on_done(examples, stats)
        return examples

    return augment
