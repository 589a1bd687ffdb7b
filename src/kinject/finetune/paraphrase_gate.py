"""The gate every LM paraphrase passes before it becomes training data (:func:`drop_reason`).

A kept paraphrase holds every name, number and date of its source (:func:`key_terms`) and adds
none, is no copy of it, has a length within bounds, is in the source's language, does not echo
the instruction, and keeps the source's subject before its verb (and, in Chinese, its verbs).
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from kinject.finetune.facts import (
    _EN_DATE,
    _EN_NUMBER,
    _EN_PROPER,
    _MONTHS,
    _STOP_CAPS,
    _posseg,
    leading_name,
)

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

