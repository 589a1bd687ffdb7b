"""Natural questions for common relations in text ("born in", "works for", "位于" ...).

A cloze question ("Fill in the blank: Ada Lind was born in ____.") teaches the fact in one
more form; a natural question ("Where was Ada Lind born?") teaches it in the form people
ask. When the words just before an answer span name a known relation, the span becomes a
relation fact with five training phrasings and a held-out sixth (for evaluation).
"""

from __future__ import annotations

import re

# (relation, context pattern that must end right before the span, needs a number?)
# None: any span; True: the span holds a digit; False: the span holds none.
_EN_RULES: tuple[tuple[str, re.Pattern[str], bool | None], ...] = (
    ("birth_date", re.compile(r"\bborn\b[^.;]{0,40}\b(?:on|in)\s*$", re.I), True),
    ("birthplace", re.compile(r"\bborn\b[^.;]{0,40}\b(?:in|at)\s*$", re.I), False),
    ("school", re.compile(r"\b(?:studied|studies|study|educated)\b[\w\s]{0,40}\b(?:at|in)\s*$"
                          r"|\bgraduated from\s*$|\battended\s*$", re.I), False),
    ("employer", re.compile(r"\b(?:works?|worked|working)(?: as an? [\w\s]{1,30})? (?:for|at)"
                            r"\s*$|\bemployer is\s*$|\bemployed (?:by|at)\s*$", re.I), False),
    ("residence", re.compile(r"\b(?:lives|lived|living|resides) in\s*$", re.I), False),
    ("founded", re.compile(r"\b(?:founded|established|opened|built) (?:in|on)\s*$", re.I), True),
    ("location", re.compile(r"\b(?:located|based|situated) (?:in|at)\s*$", re.I), False),
)
_ZH_RULES: tuple[tuple[str, re.Pattern[str], bool | None], ...] = (
    ("birth_date", re.compile(r"(?:出生于|生于|出生在|出生)$"), True),
    ("birthplace", re.compile(r"(?:出生于|生于|出生在)$"), False),
    ("school", re.compile(r"(?:毕业于|就读于|求学于)$"), False),
    ("employer", re.compile(r"(?:就职于|任职于|供职于|受雇于)$"), False),
    ("residence", re.compile(r"(?:住在|居住在|居住于|定居于|定居在)$"), False),
    ("founded", re.compile(r"(?:成立于|创立于|建于|创建于|始建于)$"), True),
    ("location", re.compile(r"(?:位于|坐落于|地处)$"), False),
)
# "在<org>工作": the relation is named after the span
_ZH_AFTER = (("employer", re.compile(r"^(?:工作|任职|上班)")),)
_DIGIT = re.compile(r"[0-9〇零一二三四五六七八九十]")

TRAIN: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "birth_date": ("When was {s} born?", "What is the date of birth of {s}?",
                       "{s} was born when?", "What is {s}'s birth date?",
                       "Tell me when {s} was born."),
        "birthplace": ("Where was {s} born?", "What is the birthplace of {s}?",
                       "{s} was born where?", "What is {s}'s place of birth?",
                       "Which city was {s} born in?"),
        "school": ("Where did {s} study?", "Which university did {s} attend?",
                   "{s} studied where?", "What is {s}'s alma mater?",
                   "Which school did {s} go to?"),
        "employer": ("Who does {s} work for?", "Which organisation employs {s}?",
                     "{s} works for whom?", "Who is {s}'s employer?",
                     "What company does {s} work at?"),
        "residence": ("Where does {s} live?", "In which place does {s} live?",
                      "{s} lives where?", "Where is {s}'s home?", "Which city does {s} live in?"),
        "founded": ("When was {s} founded?", "In what year was {s} founded?",
                    "{s} was founded when?", "When did {s} start?",
                    "What year was {s} established?"),
        "location": ("Where is {s} located?", "In which place is {s}?", "{s} is located where?",
                     "Where is {s}?", "In which city is {s} based?"),
    },
    "zh": {
        "birth_date": ("{s}是什么时候出生的？", "{s}的出生日期是？", "{s}出生于何时？",
                       "{s}哪年出生？", "{s}的生日是什么时候？"),
        "birthplace": ("{s}出生在哪里？", "{s}的出生地是哪里？", "{s}在哪里出生？",
                       "{s}出生于哪座城市？", "{s}生于何地？"),
        "school": ("{s}毕业于哪所学校？", "{s}在哪里上的大学？", "{s}就读于哪所学校？",
                   "{s}的母校是哪里？", "{s}上的是哪所大学？"),
        "employer": ("{s}在哪里工作？", "{s}为哪家单位工作？", "{s}就职于哪里？",
                     "{s}的雇主是谁？", "{s}在哪家公司上班？"),
        "residence": ("{s}住在哪里？", "{s}居住在什么地方？", "{s}的住处在哪里？",
                      "{s}现在住在哪座城市？", "{s}定居在哪里？"),
        "founded": ("{s}成立于哪一年？", "{s}是什么时候成立的？", "{s}创立于何时？",
                    "{s}哪年成立？", "{s}建立于什么时候？"),
        "location": ("{s}位于哪里？", "{s}在什么地方？", "{s}地处何方？",
                     "{s}在哪座城市？", "{s}的所在地是哪里？"),
    },
}
HELD_OUT: dict[str, dict[str, str]] = {
    "en": {
        "birth_date": "On what date did {s} come into the world?",
        "birthplace": "In which town did {s} come into the world?",
        "school": "At which school was {s} educated?",
        "employer": "Where is {s} employed?",
        "residence": "What is the home town of {s}?",
        "founded": "What is the founding date of {s}?",
        "location": "Where can {s} be found?",
    },
    "zh": {
        "birth_date": "{s}生于哪一天？",
        "birthplace": "{s}是在哪个地方出生的？",
        "school": "{s}是哪所学校的毕业生？",
        "employer": "{s}的工作单位是哪里？",
        "residence": "{s}的家在哪里？",
        "founded": "{s}创办于哪一年？",
        "location": "{s}坐落在哪里？",
    },
}


def relation_of(sentence: str, span: str, lang: str) -> str | None:
    """The relation the words around ``span`` name, if any."""
    at = sentence.find(span)
    if at < 0:
        return None
    before, after = sentence[:at], sentence[at + len(span):]
    numeric = bool(_DIGIT.search(span))
    rules = _ZH_RULES if lang == "zh" else _EN_RULES
    for name, pattern, needs_number in rules:
        if pattern.search(before[-60:]) and (needs_number is None or needs_number == numeric):
            return name
    if lang == "zh" and before.endswith("在"):
        for name, pattern in _ZH_AFTER:
            if pattern.match(after):
                return name
    return None
