"""How a fact is asked: the training phrasings (several per fact) and the held-out one.

The gate asks each fact in a phrasing that no training example uses (:func:`held_out_question`),
so it measures extraction, not recall of a memorised question. English and Chinese both.
"""

from __future__ import annotations

from dataclasses import dataclass

from kinject.finetune.facts import Fact
from kinject.finetune.relations import HELD_OUT, TRAIN


@dataclass(frozen=True)
class QAPair:
    """A question for evaluation, phrased unlike every training form."""

    question: str
    answer: str
    source_id: str
    chunk_id: str
    form: str  # "field", "relation" or "cloze"
    lang: str = "en"
    cycle: int = 0


# Training phrasings (en, zh) and the held-out ones the gate asks.
_FIELD_TRAIN = {
    "en": ("What is the {field} of {subject}?", "Tell me the {field} of {subject}.",
           "{subject}: what is the {field}?", "What {field} does {subject} have?",
           "Do you know the {field} of {subject}?"),
    "zh": ("{subject}的{field}是什么？", "请告诉我{subject}的{field}。", "{subject}，{field}是？",
           "说说{subject}的{field}。", "你知道{subject}的{field}吗？"),
}
_FIELD_HELD_OUT = {
    "en": "Which {field} is recorded for {subject}?",
    "zh": "记录中{subject}对应的{field}是哪个？",
}
_CLOZE_TRAIN = {
    "en": ("Fill in the blank: {masked}", "What goes in the blank? {masked}",
           "Complete the sentence: {masked}", "Supply the missing words: {masked}",
           "{masked} (fill in the blank)"),
    "zh": ("填空：{masked}", "请补全这句话：{masked}", "空白处应填什么？{masked}",
           "补全空缺的内容：{masked}", "{masked}（填空）"),
}
_CLOZE_HELD_OUT = {
    "en": "Which word or phrase is missing here? {masked}",
    "zh": "这句话里缺少的词是什么？{masked}",
}
# Training phrasings per fact at most (every template set above has this many).
MAX_PHRASINGS = 5


def _question(fact: Fact, variant: int) -> str:
    if fact.kind == "relation":
        forms = TRAIN[fact.lang][fact.field]
        return forms[variant % len(forms)].format(s=fact.subject)
    if fact.kind == "field":
        forms = _FIELD_TRAIN[fact.lang]
        return forms[variant % len(forms)].format(field=fact.field, subject=fact.subject)
    forms = _CLOZE_TRAIN[fact.lang]
    return forms[variant % len(forms)].format(masked=fact.masked)


def held_out_question(fact: Fact) -> str:
    """The evaluation phrasing of a fact: no training form uses it."""
    if fact.kind == "relation":
        return HELD_OUT[fact.lang][fact.field].format(s=fact.subject)
    if fact.kind == "field":
        return _FIELD_HELD_OUT[fact.lang].format(field=fact.field, subject=fact.subject)
    return _CLOZE_HELD_OUT[fact.lang].format(masked=fact.masked)
