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
import re
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Any

from kinject.finetune.facts import (
    _EN_DATE,
    _EN_NUMBER,
    _EN_PROPER,
    _MONTHS,
    _STOP_CAPS,
    _posseg,
    is_structured,
    lang_of,
    leading_name,
    resolve_sentences,
    split_sentences,
    text_subject,
)
from kinject.types import Chunk, TrainingExample, content_hash

if TYPE_CHECKING:
    from kinject.finetune.corpus import CorpusStore

log = logging.getLogger(__name__)

FORM = "paraphrase"
# (sentence, lang) pairs in, ``k`` candidates per pair out.
Generate = Callable[[Sequence[tuple[str, str]], int], list[list[str]]]


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


# -- the gate ---------------------------------------------------------------------------------
_CJK = re.compile(r"[\u3400-\u9fff]")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
_DIGITS = re.compile(r"\d+")
_CAP_WORD = re.compile(r"\b[A-Z][\w'-]*")
_ZH_NAME_FLAGS = frozenset({"nr", "ns", "nt", "nz", "nrt", "nrfg", "eng"})
# Words that may open an English paraphrase without being a name.
_OPENERS = _STOP_CAPS | frozenset({
    "Born", "Founded", "With", "As", "During", "Since", "From", "Today", "Later", "Now",
    "Located", "Based", "Having", "By", "For", "Of", "Once", "There", "Its", "Following"})
_ECHO = re.compile(
    r"^\s*(?:here\s+is|here's|sure|certainly|of course|okay|ok\b|i\s+(?:can|will|would)|"
    r"as an ai|rewritten|paraphrased?|rephrased?|the sentence|sentence\s*:|answer\s*:)"
    r"|\b(?:paraphrase|rephrase|rewrite|rewritten|in other words|the original sentence)\b"
    r"|改写|以下是|当然|好的|句子|原句|换一种说法|同义",
    re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:paraphrase|rewrite|rewritten|output|改写|输出)\s*[:：]\s*",
                    re.IGNORECASE)
_QUOTES = "\"'“”‘’「」『』"


def key_terms(text: str, lang: str) -> set[str]:
    """The names, numbers and dates of a sentence, the words a paraphrase must keep.

    English: each number, and each capitalised word of a proper name (a sentence's opening
    word only when it begins a name of several words, "Ada Lind ..." but not "Born in ...").
    Chinese: each number, the name a sentence opens with, and the words jieba tags as
    person, place, organisation or other proper names.
    """
    terms = set(_DIGITS.findall(text))
    if lang == "zh":
        lead = leading_name(text, "zh")
        if lead and _CJK_RUN.fullmatch(lead):
            terms.add(lead)
        return terms | _zh_names(text)
    for m in _EN_DATE.finditer(text):
        terms.update(w.strip(",") for w in m.group(0).split() if not w[:1].isdigit())
    for m in _EN_PROPER.finditer(text):
        words = m.group(0).split()
        if m.start() == 0 and len(words) == 1:
            continue
        terms.update(w for w in words if w[:1].isupper() and w not in _STOP_CAPS)
    terms.update(_EN_NUMBER.findall(text))
    return {t.removesuffix("'s") for t in terms if t}


def _zh_names(text: str) -> set[str]:
    """Words jieba tags as names, and the noun after a preposition (在大理, 于清华大学)."""
    names: set[str] = set()
    after_prep = False
    for pair in _posseg().cut(text):
        word = pair.word.strip()
        if len(word) >= 2 and not word.isdigit() and (
                pair.flag in _ZH_NAME_FLAGS or (after_prep and pair.flag.startswith("n"))):
            names.add(word)
        after_prep = pair.flag == "p"
    return names


def _new_terms(source: str, candidate: str, lang: str) -> set[str]:
    """Names and numbers in ``candidate`` that ``source`` does not hold (the drift)."""
    new = {d for d in _DIGITS.findall(candidate) if d not in _DIGITS.findall(source)}
    if lang == "zh":
        return new | {t for t in _zh_names(candidate) if t not in source}
    low = source.lower()
    months = set(_MONTHS.split("|"))
    for m in _CAP_WORD.finditer(candidate):
        word = m.group(0).removesuffix("'s")
        at_start = m.start() == 0 or candidate[:m.start()].rstrip()[-1:] in ".!?\"'"
        if word in _OPENERS or (word in months and word in source):
            continue
        if word in source or (at_start and word.lower() in low):
            continue
        new.add(word)
    return new


def _normal(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def clean_output(text: str) -> str:
    """The first non-empty line of what the model wrote, without a label or quotes."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    return re.sub(r"\s{2,}", " ", line)


def drop_reason(source: str, candidate: str, lang: str, *, min_ratio: float = 0.5,
                max_ratio: float = 2.0) -> str | None:
    """Why a paraphrase must not be trained on, or None when it may be."""
    if not candidate.strip():
        return "empty"
    if _ECHO.search(candidate) and not _ECHO.search(source):
        return "instruction echo"
    cjk = len(_CJK.findall(candidate)) / max(1, len(re.sub(r"\s", "", candidate)))
    if (lang == "zh") != (cjk > 0.3):
        return "wrong language"
    ratio = len(candidate) / max(1, len(source))
    if not min_ratio <= ratio <= max_ratio:
        return f"length {ratio:.2f}x"
    a, b = _normal(source), _normal(candidate)
    if a == b or SequenceMatcher(None, a, b).ratio() >= 0.97:
        return "copy"
    lost = sorted(t for t in key_terms(source, lang) if t.lower() not in candidate.lower())
    if lost:
        return "lost " + ", ".join(lost)
    added = sorted(_new_terms(source, candidate, lang))
    if added:
        return "added " + ", ".join(added)
    if _swapped(source, candidate, lang):
        return "subject moved after its verb"
    if lang == "zh":
        # the tiny model swaps the relation itself (出生 -> 搬到): keep the source's verbs
        verbs = {p.word for p in _posseg().cut(source)
                 if p.flag.startswith("v") and len(p.word) >= 2 and p.word not in _ZH_LIGHT}
        lost_verbs = sorted(v for v in verbs if v not in candidate)
        if lost_verbs:
            return "lost " + ", ".join(lost_verbs)
    return None


_ZH_LIGHT = frozenset({"位于", "成为", "进行", "开始", "作为", "属于", "拥有"})


_AUX = frozenset({"was", "is", "were", "are", "has", "had", "have", "will", "also", "then",
                  "later", "first", "once", "still", "now"})


def _swapped(source: str, candidate: str, lang: str) -> bool:
    """Whether the name a sentence opens with comes after that sentence's verb in the
    candidate ("Tomas Berg founded X" -> "... X founded Tomas Berg"): the tiny model's
    commonest drift that keeps every term. A passive "by Tomas Berg" is no swap."""
    subject = leading_name(source, lang)
    if not subject:
        return False
    rest = source[len(subject):]
    if lang == "zh":
        verb = next((p.word for p in _posseg().cut(rest) if p.flag.startswith("v")), "")
        at = candidate.find(verb) if verb else -1
    else:
        verb = next((w for w in re.findall(r"\b[a-z]+\b", rest) if w not in _AUX), "")
        m = re.search(rf"\b{re.escape(verb)}\b", candidate) if verb else None
        at = m.start() if m else -1
        if re.search(rf"\bby {re.escape(subject)}\b", candidate):
            return False
    who = candidate.find(subject)
    return at >= 0 and who >= 0 and at < who


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


# -- the model ---------------------------------------------------------------------------------
_INSTRUCTION = {
    "en": "Paraphrase: say the same thing with different wording and word order. Keep every "
          "name, number and date.",
    "zh": "改写：用不同的措辞和语序表达同样的意思，保留所有名字、数字和日期。",
}
# Two worked examples: with them the tiny model answers with one sentence, not a preamble.
_SHOTS = {
    "en": (("Mia Holt moved to Parma in 2004.", "In 2004, Mia Holt moved to Parma."),
           ("Kern Labs employs 120 engineers in Oslo.",
            "In Oslo, 120 engineers work for Kern Labs.")),
    "zh": (("王丽于2004年搬到了成都。", "2004年，王丽搬到了成都。"),
           ("星河公司在上海有120名工程师。", "在上海，星河公司拥有120名工程师。")),
}


def messages(sentence: str, lang: str) -> list[dict[str, str]]:
    """The chat that asks for a paraphrase of ``sentence``, in its language."""
    lang = "zh" if lang == "zh" else "en"
    out: list[dict[str, str]] = []
    for src, dst in _SHOTS[lang]:
        out += [{"role": "user", "content": f"{_INSTRUCTION[lang]}\n{src}"},
                {"role": "assistant", "content": dst}]
    return [*out, {"role": "user", "content": f"{_INSTRUCTION[lang]}\n{sentence}"}]


class LmParaphraser:
    """Paraphrases with a loaded causal LM (a PEFT model is used with its adapter disabled:
    the base model writes). Eval mode, no gradients, batched sampling from a fixed seed;
    the model's mode, cache setting, the tokenizer's padding side and torch's RNG are all
    restored afterwards, so a trainer can lend its model and go on as if nothing happened."""

    def __init__(self, tokenizer: Any, model: Any, config: ParaphraseConfig | None = None
                 ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.config = config or ParaphraseConfig()

    def __call__(self, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        import torch

        tok, model, cfg = self.tokenizer, self.model, self.config
        if not items:
            return []
        was_training = model.training
        side, use_cache = tok.padding_side, getattr(model.config, "use_cache", True)
        disable = getattr(model, "disable_adapter", None)
        out: list[list[str]] = []
        t0 = time.perf_counter()
        try:
            model.eval()
            tok.padding_side = "left"
            model.config.use_cache = True
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                    torch.no_grad(), (disable() if callable(disable) else nullcontext()):
                torch.manual_seed(cfg.seed)
                for start in range(0, len(items), cfg.batch_size):
                    out.extend(self._batch(items[start:start + cfg.batch_size], k, device))
        finally:
            model.train(was_training)
            tok.padding_side = side
            model.config.use_cache = use_cache
        log.info("paraphrased %d sentence(s) x %d in %.1f s", len(items), k,
                 time.perf_counter() - t0)
        return out

    def _batch(self, items: Sequence[tuple[str, str]], k: int, device: Any) -> list[list[str]]:
        tok, cfg = self.tokenizer, self.config
        prompts = [tok.apply_chat_template(messages(s, lang), tokenize=False,
                                           add_generation_prompt=True) for s, lang in items]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {key: v.to(device) for key, v in enc.items()}
        longest = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s, _ in items)
        generated = self.model.generate(
            **enc, max_new_tokens=min(256, 2 * longest + 8), do_sample=True,
            temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=k,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
            else tok.eos_token_id)
        texts = tok.batch_decode(generated[:, enc["input_ids"].shape[1]:],
                                 skip_special_tokens=True)
        return [texts[i * k:(i + 1) * k] for i in range(len(items))]
