"""Training examples from a chunk: knowledge is only extractable when seen in several forms.

Allen-Zhu and Li (Physics of Language Models 3.1) found that one form per fact gives about
10% extraction and several rephrasings plus sentence permutation about 96%. So every chunk
becomes, besides the passage itself:

- rephrasings: template sentences for structured rows (``Field: value.`` texts), sentence
  permutations and full-name repetition (pronouns replaced by the subject) for text;
- question-answer pairs: per-field templates for rows, cloze questions for text;
- RAFT-style examples: a question with the right passage among distractors, answered with
  the span quoted from the right passage and its number, in the very prompt the RAG reader
  is asked in (:func:`kinject.prompting.reader_prompt`; the trainer adds the reader's system
  prompt), with as many passages as the reader is shown.

Evaluation questions (:func:`eval_questions`) use phrasings that no training form uses, so a
gate measures extraction, not recall of a memorised question. English and Chinese both.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kinject.finetune.facts import (
    _CJK,
    _FIELD_LINE,
    Fact,
    extract_facts,
    is_structured,
    lang_of,
    leading_name,
    repeat_full_name,
    resolve_sentences,
    row_fields,
    split_sentences,
    text_subject,
)
from kinject.finetune.questions import MAX_PHRASINGS, QAPair, _question, held_out_question
from kinject.prompting import reader_prompt
from kinject.types import Chunk, TrainingExample, content_hash

# The facts (facts.py) and how they are asked (questions.py) live beside this module; their
# names stay importable from here.
__all__ = [
    "FORMS", "MAX_PHRASINGS", "PROMPTED_FORMS", "AugmentConfig", "Fact", "QAPair",
    "build_examples", "distractor_units", "eval_questions", "extract_facts",
    "held_out_question", "is_structured", "lang_of", "leading_name", "raft_prompt",
    "repeat_full_name", "resolve_sentences", "row_fields", "split_sentences", "text_subject",
    "train_questions",
]

FORMS = ("passage", "rephrase", "permute", "qa", "cloze", "raft", "paraphrase")
# Forms whose loss is on the completion only (the prompt is masked).
PROMPTED_FORMS = frozenset({"qa", "cloze", "raft"})


@dataclass(frozen=True)
class AugmentConfig:
    """How many forms each chunk gets. Defaults follow the Physics-of-LMs recipe."""

    permutations: int = 2  # sentence orders of a text (besides the original)
    rephrasings: int = 4  # template rewrites of a structured row (fields reordered)
    qa_per_fact: int = 3  # training phrasings per fact (question-answer or cloze)
    max_facts: int = 12  # facts asked about per chunk
    raft_per_chunk: int = 2  # RAFT examples per chunk
    # Wrong passages beside the right one in a RAFT example: the RAG reader is shown two
    # reading units by default (RagConfig.max_sentences), so one right and one wrong.
    distractors: int = 1

    def __post_init__(self) -> None:
        for name in ("permutations", "rephrasings", "max_facts", "raft_per_chunk",
                     "distractors"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not 1 <= self.qa_per_fact <= MAX_PHRASINGS:
            raise ValueError(f"qa_per_fact must be in 1..{MAX_PHRASINGS}, got "
                             f"{self.qa_per_fact!r}")


_REPHRASE = {
    "en": ("{subject}'s {field} is {value}.", "The {field} of {subject} is {value}.",
           "For {subject}, the {field} is {value}.", "{value} is the {field} of {subject}.",
           "As for {subject}, {field}: {value}."),
    "zh": ("{subject}的{field}是{value}。", "{subject}的{field}为{value}。",
           "关于{subject}：{field}是{value}。", "{value}是{subject}的{field}。",
           "说到{subject}，{field}是{value}。"),
}


def raft_prompt(question: str, passages: Sequence[str]) -> str:
    """The user turn of a RAFT example: the RAG reader's own (fenced, numbered passages,
    then the question), so what the reader learns is what it is asked at answer time."""
    return reader_prompt(question, passages)


def _example(chunk: Chunk, form: str, key: str, prompt: str, completion: str, lang: str,
             cycle: int) -> TrainingExample:
    return TrainingExample(
        example_id=content_hash(chunk.chunk_id, form, key),
        chunk_id=chunk.chunk_id,
        source_id=chunk.source_id,
        prompt=prompt,
        completion=completion,
        form=form,
        cycle=cycle,
        lang=lang,
    )


def _rephrasings(chunk: Chunk, lang: str, rng: random.Random, cfg: AugmentConfig
                 ) -> list[tuple[str, str]]:
    """(form, text) rewrites of the passage."""
    out: list[tuple[str, str]] = []
    joiner = "" if lang == "zh" else " "
    if is_structured(chunk):
        subject, fields = row_fields(chunk)
        if not subject or not fields:
            return out
        for i in range(cfg.rephrasings):
            order = list(fields)
            if i:
                rng.shuffle(order)
            templates = _REPHRASE[lang]
            text = joiner.join(templates[(i + j) % len(templates)].format(
                subject=subject, field=f, value=v) for j, (f, v) in enumerate(order))
            out.append(("rephrase", text))
        return out
    sentences = split_sentences(chunk.text, lang)
    subject = text_subject(chunk, sentences, lang)
    resolved = [r for r, _ in resolve_sentences(sentences, subject, lang)]
    if resolved != sentences:
        out.append(("rephrase", joiner.join(resolved)))
    seen = {tuple(resolved)}
    for _ in range(cfg.permutations * 3):  # a few tries: short texts have few orders
        if len(seen) > cfg.permutations or len(resolved) < 2:
            break
        sents = list(resolved)
        rng.shuffle(sents)
        if tuple(sents) in seen:
            continue
        seen.add(tuple(sents))
        out.append(("permute", joiner.join(sents)))
    return out


def build_examples(chunk: Chunk, distractors: Sequence[str] = (), *, cycle: int = 0,
                   config: AugmentConfig | None = None) -> list[TrainingExample]:
    """Every training example for one chunk (deterministic for a chunk and its distractors).

    ``distractors`` are texts of *other* chunks; RAFT examples draw their wrong passages
    from them (a RAFT example with no distractor holds the right passage alone).
    """
    cfg = config or AugmentConfig()
    lang = lang_of(chunk)
    rng = random.Random(chunk.chunk_id)
    text = chunk.text.strip()
    examples = [_example(chunk, "passage", "", "", text, lang, cycle)]
    for form, body in _rephrasings(chunk, lang, rng, cfg):
        examples.append(_example(chunk, form, body, "", body, lang, cycle))
    facts = extract_facts(chunk, cfg.max_facts)
    for fact in facts:
        form = "cloze" if fact.kind == "cloze" else "qa"
        for variant in range(cfg.qa_per_fact):
            q = _question(fact, variant)
            examples.append(_example(chunk, form, q, q, fact.answer, lang, cycle))
    pool = [s for t in distractors for s in distractor_units(t) if s.strip() and s not in text]
    # different facts, asked in different training phrasings, the right passage anywhere
    for i, fact in enumerate(rng.sample(facts, min(cfg.raft_per_chunk, len(facts)))):
        wrong = rng.sample(pool, min(cfg.distractors, len(pool)))
        passages = [*wrong]
        right_at = rng.randint(0, len(passages))
        passages.insert(right_at, fact.sentence)
        q = _question(fact, i % cfg.qa_per_fact)
        examples.append(_example(chunk, "raft", q, raft_prompt(q, passages),
                                 f"{fact.answer} [{right_at + 1}]", lang, cycle))
    return examples


def distractor_units(text: str) -> list[str]:
    """Units a distractor is drawn from: the row whole, or the sentences of a text."""
    if _FIELD_LINE.match(text.splitlines()[0] if text.strip() else ""):
        return [text]
    lang = "zh" if _CJK.search(text) else "en"
    return split_sentences(text, lang) or [text]


def eval_questions(chunk: Chunk, *, cycle: int = 0, config: AugmentConfig | None = None
                   ) -> list[QAPair]:
    """Held-out questions for a chunk's facts (a phrasing no training example uses)."""
    cfg = config or AugmentConfig()
    return [
        QAPair(held_out_question(f), f.answer, chunk.source_id, chunk.chunk_id, f.kind,
               f.lang, cycle)
        for f in extract_facts(chunk, cfg.max_facts)
    ]


def train_questions(chunk: Chunk, *, cycle: int = 0, config: AugmentConfig | None = None
                    ) -> list[QAPair]:
    """The first training phrasing of each fact (memorisation, as opposed to extraction)."""
    cfg = config or AugmentConfig()
    return [
        QAPair(_question(f, 0), f.answer, chunk.source_id, chunk.chunk_id, f.kind, f.lang, cycle)
        for f in extract_facts(chunk, cfg.max_facts)
    ]
