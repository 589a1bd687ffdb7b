"""The facts a chunk states, and the sentence work that finds them.

A structured row (``Field: value.`` lines or an ingest ``row``) states one fact per field
about its subject (the row's name); a text states cloze facts (an answer-worthy span of a
sentence: a date, a number, a name) and, where a sentence says a known relation
(:mod:`kinject.finetune.relations`), a relation fact about the name the sentence is about.
Pronouns are resolved to that name first, so a fact never asks about "he". English and
Chinese both (Chinese spans come from jieba's part-of-speech tags).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kinject.finetune.relations import relation_of
from kinject.types import Chunk

_STRUCTURED_KINDS = frozenset({"csv", "tsv", "sql", "json", "jsonl", "xml"})
_NAME_KEYS = ("name", "full_name", "fullname", "title", "person", "company", "姓名", "名称",
              "名字", "标题")
_FIELD_LINE = re.compile(r"^\s*([^:\n：]{1,60})[:：]\s*(.+?)\s*$")
_CJK = re.compile(r"[\u3400-\u9fff]")
_EN_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ZH_SENT = re.compile(r"(?<=[。！？；])")
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
           "December")
_EN_DATE = re.compile(rf"\b(?:(?:{_MONTHS})\s+\d{{1,2}},?\s+\d{{4}}|\d{{1,2}}\s+(?:{_MONTHS})"
                      rf"\s+\d{{4}}|(?:{_MONTHS})\s+\d{{4}}|\d{{4}}-\d{{2}}-\d{{2}})\b")
_EN_NUMBER = re.compile(r"\b\d[\d,.:/-]*\d\b|\b\d\b")
_EN_PROPER = re.compile(r"\b[A-Z][\w'-]+(?:\s+(?:of|the|de|van|von|and)\s+[A-Z][\w'-]+"
                        r"|\s+[A-Z][\w'-]+)*")
_EN_SUBJECT = re.compile(r"^((?:[A-Z][\w'.-]*)(?:\s+[A-Z][\w'.-]*){0,3})\s+[a-z(]")
_EN_PRONOUN = re.compile(r"^(He|She|They|It)\b")
_EN_POSSESSIVE = re.compile(r"^(His|Her|Their|Its)\b")
_ZH_PREDICATES = ("出生", "生于", "毕业", "成立", "位于", "担任", "就职", "工作", "是", "于", "在",
                  "的", "为", "有")
_STOP_CAPS = frozenset({"The", "A", "An", "In", "On", "At", "He", "She", "It", "They", "His",
                        "Her", "Its", "Their", "This", "That", "After", "Before", "When"})
_BLANK = "____"
_ZH_NUMERIC = re.compile(r"[0-9〇零一二三四五六七八九十百千万两]")
_ZH_UNITS = frozenset({"年", "月", "日", "号", "岁", "元", "米", "人", "年代"})
_ZH_NAME_FLAGS = frozenset({"ns", "nr", "nt", "nz", "nrt", "nrfg"})
# Enrichments the ingest writes beside a value ("March 2, 1990 (1990-03-02)"): a cloze that
# blanks one of the two would show the answer in the other.
_ENRICHMENT = re.compile(r"\s*\([^()]*\d[^()]*\)")


@dataclass(frozen=True)
class Fact:
    """One thing a chunk states: ``subject``'s ``field`` is ``answer`` (a row field), or a
    sentence whose ``answer`` span can be blanked out (``cloze``)."""

    kind: str  # "field" (a row's field), "relation" (a named relation in text) or "cloze"
    subject: str
    answer: str
    lang: str
    field: str = ""  # the row's field, or the relation's name
    sentence: str = ""  # the sentence holding the answer (the evidence for RAFT)
    masked: str = ""  # the sentence with the answer blanked (cloze)



def lang_of(chunk: Chunk) -> str:
    """``zh`` or ``en`` (a mixed chunk counts as Chinese when it holds Chinese characters)."""
    if chunk.lang == "zh" or (chunk.lang == "mixed" and _CJK.search(chunk.text)):
        return "zh"
    return "en"


def split_sentences(text: str, lang: str) -> list[str]:
    """Sentences of ``text`` (lines first, then sentence ends)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = _ZH_SENT.split(line) if lang == "zh" else _EN_SENT.split(line)
        out.extend(p.strip() for p in parts if p.strip())
    return out


def is_structured(chunk: Chunk) -> bool:
    return isinstance(chunk.meta.get("row"), dict) or (
        chunk.kind in _STRUCTURED_KINDS and len(_fields_from_text(chunk.text)) >= 2)


def _human(field: str) -> str:
    field = re.sub(r"\[(\d+)\]", r" \1", field)
    return re.sub(r"[._]+", " ", field).strip()


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text.rstrip(".。") or None


def _fields_from_text(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        m = _FIELD_LINE.match(line)
        if m and m.group(2).strip().rstrip(".。"):
            out.append((m.group(1).strip(), m.group(2).strip().rstrip(".。")))
    return out


def row_fields(chunk: Chunk) -> tuple[str, list[tuple[str, str]]]:
    """The subject (the row's name) and its other (field, value) pairs."""
    row = chunk.meta.get("row")
    pairs: list[tuple[str, str]]
    if isinstance(row, dict):
        pairs = [(str(k), v) for k, raw in row.items() if (v := _scalar(raw)) is not None]
    else:
        pairs = _fields_from_text(chunk.text)
    if not pairs:
        return "", []
    subject_idx = next((i for i, (k, _) in enumerate(pairs)
                        if _human(k).lower().split(" ")[-1] in _NAME_KEYS), None)
    if subject_idx is None:
        subject_idx = next((i for i, (_, v) in enumerate(pairs) if not v.replace(".", "")
                            .replace("-", "").isdigit()), 0)
    subject = pairs[subject_idx][1]
    fields = [(_human(k), v) for i, (k, v) in enumerate(pairs) if i != subject_idx]
    return subject, fields


def leading_name(sentence: str, lang: str) -> str:
    """The name a sentence starts with ("Ada Lind was ...", "蓝湖科技成立于 ..."), or ""."""
    if lang == "zh":
        cut = min((i for w in _ZH_PREDICATES if (i := sentence.find(w)) > 0), default=-1)
        return sentence[:cut] if 2 <= cut <= 10 else ""
    m = _EN_SUBJECT.match(sentence)
    if m and m.group(1).split()[0] not in _STOP_CAPS:
        return m.group(1).rstrip(".")
    return ""


def text_subject(chunk: Chunk, sentences: Sequence[str], lang: str) -> str:
    """Who or what a text is about: the leading name of its first sentence, else its title."""
    name = leading_name(sentences[0] if sentences else chunk.text, lang)
    if name:
        return name
    title = str(chunk.meta.get("title") or "").strip()
    return title if title and "." not in title[-5:] else ""


def repeat_full_name(sentence: str, subject: str, lang: str) -> str:
    """Replace a sentence-initial pronoun by the subject's full name."""
    if not subject:
        return sentence
    if lang == "zh":
        for pron in ("他的", "她的", "它的"):
            if sentence.startswith(pron):
                return subject + "的" + sentence[len(pron):]
        if sentence[:1] in ("他", "她", "它") and not sentence.startswith(("他们", "她们", "它们")):
            return subject + sentence[1:]
        return sentence
    if _EN_POSSESSIVE.match(sentence):
        return _EN_POSSESSIVE.sub(f"{subject}'s", sentence, count=1)
    return _EN_PRONOUN.sub(subject, sentence, count=1)


def _starts_with_pronoun(sentence: str, lang: str) -> bool:
    if lang == "zh":
        return sentence[:1] in ("他", "她", "它") and sentence[1:2] != "们"
    return bool(_EN_PRONOUN.match(sentence) or _EN_POSSESSIVE.match(sentence))


def resolve_sentences(sentences: Sequence[str], subject: str, lang: str
                      ) -> list[tuple[str, str]]:
    """Each sentence with its pronoun replaced by the name it refers to (the last name a
    sentence started with), and who the sentence is about ("" when it cannot tell)."""
    out: list[tuple[str, str]] = []
    current = subject
    for sentence in sentences:
        name = leading_name(sentence, lang)
        if name:
            current = name
            out.append((sentence, name))
        elif _starts_with_pronoun(sentence, lang) and current:
            out.append((repeat_full_name(sentence, current, lang), current))
        else:
            out.append((sentence, ""))
    return out


@lru_cache(maxsize=1)
def _posseg() -> Any:
    import logging

    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba.posseg


def _zh_spans(sentence: str, subject: str) -> list[str]:
    """Answer-worthy spans of a Chinese sentence: numbers and dates, places, names, orgs,
    and the noun phrase after a preposition (在大理, 于清华大学)."""
    spans: list[str] = []
    current, current_kind, after_prep = "", "", False
    for pair in _posseg().cut(sentence):
        word, flag = pair.word, pair.flag
        numeric = bool(_ZH_NUMERIC.search(word))
        kind = ("num" if (numeric and flag in ("m", "t", "eng", "x", "q"))
                or (current_kind == "num" and word in _ZH_UNITS)
                else "name" if flag in _ZH_NAME_FLAGS or (after_prep and flag.startswith("n"))
                else "")
        after_prep = flag == "p"
        if kind and (kind == current_kind or not current):
            current, current_kind = current + word, kind
            continue
        if current:
            spans.append(current)
        current, current_kind = (word, kind) if kind else ("", "")
    if current:
        spans.append(current)
    return [s for s in spans if len(s) >= 2 and s not in subject and subject not in s]


def _en_spans(sentence: str, subject: str) -> list[str]:
    """Answer-worthy spans of an English sentence: dates, numbers and proper names."""
    spans = [m.group(0) for m in _EN_DATE.finditer(sentence)]
    covered = " ".join(spans)
    spans += [m.group(0) for m in _EN_NUMBER.finditer(sentence) if m.group(0) not in covered]
    for m in _EN_PROPER.finditer(sentence):
        span = m.group(0)
        if m.start() == 0 or span in subject or subject and subject in span:
            continue
        if span.split()[0] in _STOP_CAPS or span in _MONTHS.split("|"):
            continue
        spans.append(span)
    return spans


def extract_facts(chunk: Chunk, limit: int = 12) -> list[Fact]:
    """The facts of a chunk, row fields or cloze spans, at most ``limit``."""
    lang = lang_of(chunk)
    if is_structured(chunk):
        subject, fields = row_fields(chunk)
        return [Fact("field", subject, value, lang, field=field, sentence=chunk.text)
                for field, value in fields if subject and value != subject][:limit]
    sentences = split_sentences(chunk.text, lang)
    subject = text_subject(chunk, sentences, lang)
    facts: list[Fact] = []
    related: list[Fact] = []
    for original, (resolved, who) in zip(sentences, resolve_sentences(sentences, subject, lang),
                                         strict=True):
        resolved = _ENRICHMENT.sub("", resolved)
        spans = _zh_spans(resolved, subject) if lang == "zh" else _en_spans(resolved, subject)
        # the last spans of a sentence are usually its objects ("... was born in Osk")
        for span in spans[-2:]:
            masked = resolved.replace(span, _BLANK, 1)
            if masked == resolved or len(masked.replace(_BLANK, "").strip()) < 4:
                continue
            facts.append(Fact("cloze", subject, span, lang, sentence=original, masked=masked))
            relation = relation_of(resolved, span, lang) if who and span not in who else None
            if relation is not None:
                related.append(Fact("relation", who, span, lang, field=relation,
                                    sentence=original, masked=masked))
    # natural questions first: they are the form people ask in
    return (related + facts)[:limit]
