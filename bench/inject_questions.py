"""The injection bench's people and its own question phrasings.

Invented people with eight kinds of facts each (birth year, birthplace, university, field of
study, employer, instrument, pet, favourite dish), in English or Chinese, published to kinject
as JSON records. The questions asked about them come from the phrasings below, written apart
from kinject's corpus builder (``kinject.finetune.augment`` and ``kinject.finetune.relations``):
those ask "What is the {field} of {subject}?" and the like, with the record's own field name;
these ask the way a person would, in words the records never use ("Which musical instrument
does ... play?", "...家里养着什么动物？"). :func:`leaks` checks that no question occurs in what
the corpus builder makes of a record (its training examples and its held-out questions).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of fact: the record's field name and its values, and the bench's questions,
    per language (``{n}`` is the person's name)."""

    key: dict[str, str]
    values: dict[str, tuple[str, ...]]
    questions: dict[str, tuple[str, ...]]


_YEARS = tuple(str(y) for y in range(1921, 2000))

KINDS: tuple[Kind, ...] = (
    Kind({"en": "birth year", "zh": "出生年份"}, {"en": _YEARS, "zh": _YEARS},
         {"en": ("{n} was born in which year?", "Which year saw the birth of {n}?"),
          "zh": ("{n}是哪一年生的？", "{n}生在哪一年？")}),
    Kind({"en": "birthplace", "zh": "出生地"},
         {"en": ("Port Avalen", "Thistlebury", "Mirecastle", "Oldharbour", "Wrenfield",
                 "Duskmoor", "Brackenholt", "Saltmere"),
          "zh": ("大理", "泉州", "洛阳", "桂林", "喀什", "丽江", "扬州", "敦煌")},
         {"en": ("Name the town {n} was born in.", "{n} comes from which town by birth?"),
          "zh": ("{n}是在哪座城市降生的？", "{n}的故乡是哪座城市？")}),
    Kind({"en": "university", "zh": "大学"},
         {"en": ("Avalen University", "Mirecastle College", "the Wrenfield Institute",
                 "Duskmoor Polytechnic", "Saltmere Academy"),
          "zh": ("青岚大学", "南湖学院", "西岭理工", "北川师范大学")},
         {"en": ("{n} earned a degree at which university?",
                 "From which university does {n} hold a degree?"),
          "zh": ("{n}是从哪所大学毕业的？", "{n}拿的是哪所大学的文凭？")}),
    Kind({"en": "field of study", "zh": "专业"},
         {"en": ("marine biology", "medieval history", "quantum chemistry", "urban planning",
                 "glass sculpture", "linguistics", "orchard management", "bridge engineering"),
          "zh": ("海洋生物学", "中世纪历史", "量子化学", "城市规划", "语言学", "玻璃雕塑")},
         {"en": ("What subject did {n} specialise in?", "{n} trained in which discipline?"),
          "zh": ("{n}学的是什么学科？", "{n}主修哪个学科？")}),
    Kind({"en": "employer", "zh": "雇主"},
         {"en": ("Halcyon Instruments", "Verdant Mills", "Copperleaf Press", "Bramble & Sons",
                 "the Duskmoor Observatory", "Lantern Rail"),
          "zh": ("青岚仪器公司", "翠谷纺织厂", "铜叶出版社", "星河天文台", "白塔造船厂")},
         {"en": ("Which organisation pays {n}'s salary?",
                 "{n} is on the staff of which organisation?"),
          "zh": ("{n}在哪个单位上班？", "{n}受雇于哪家机构？")}),
    Kind({"en": "instrument", "zh": "乐器"},
         {"en": ("cello", "oboe", "harp", "accordion", "banjo", "bassoon", "harpsichord"),
          "zh": ("二胡", "古筝", "琵琶", "笛子", "扬琴", "唢呐")},
         {"en": ("Which musical instrument does {n} play?", "{n} plays what instrument?"),
          "zh": ("{n}会演奏什么乐器？", "{n}平时弹奏哪种乐器？")}),
    Kind({"en": "pet", "zh": "宠物"},
         {"en": ("tortoise", "parrot", "ferret", "goldfish", "greyhound", "hedgehog"),
          "zh": ("乌龟", "鹦鹉", "金鱼", "刺猬", "白兔", "八哥")},
         {"en": ("What kind of animal does {n} keep at home?",
                 "{n} owns which animal as a pet?"),
          "zh": ("{n}家里养着什么动物？", "{n}养的小动物是什么？")}),
    Kind({"en": "favourite dish", "zh": "最爱的菜"},
         {"en": ("lentil soup", "fish pie", "mushroom risotto", "lamb stew", "apple dumplings",
                 "onion tart"),
          "zh": ("麻婆豆腐", "红烧肉", "宫保鸡丁", "酸菜鱼", "小笼包", "糖醋排骨")},
         {"en": ("What dish does {n} like best?", "Which meal is {n}'s favourite?"),
          "zh": ("{n}最喜欢吃什么菜？", "{n}最爱哪道菜？")}),
)

_FIRST = ("Aldric", "Brenna", "Cosmo", "Dagny", "Elowen", "Fenwick", "Galen", "Hesper",
          "Isolde", "Jory", "Kestrel", "Lysandra", "Merrick", "Nerys", "Orrin", "Perpetua")
_LAST = ("Ashdown", "Blackwood", "Corrow", "Dunmere", "Everly", "Fallowfield", "Greythorn",
         "Hollis", "Ironside", "Kettering", "Larkspur", "Marchbank", "Northcote", "Quillfeather")
_ZH_SURNAME = tuple("王李张刘陈杨赵黄周吴徐孙")
_ZH_GIVEN = ("小明", "雨桐", "子轩", "欣怡", "浩然", "思远", "梓涵", "俊杰", "若曦", "一鸣")


@dataclass(frozen=True)
class Person:
    source_id: str
    name: str
    lang: str
    facts: tuple[tuple[int, str], ...]  # (index into KINDS, value)

    def record(self) -> dict[str, str]:
        """The JSON record published for this person: name first, then the eight fields."""
        row = {"name" if self.lang == "en" else "姓名": self.name}
        row.update({KINDS[k].key[self.lang]: v for k, v in self.facts})
        return row

    def content(self) -> str:
        return json.dumps(self.record(), ensure_ascii=False)


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    source_id: str
    kind: str  # the English field name
    lang: str


def people(n: int, rng: random.Random, taken: set[str], prefix: str,
           zh_every: int = 4) -> list[Person]:
    """``n`` new people (names not in ``taken``); every ``zh_every``-th is Chinese, the second
    one of a batch first, so even a batch of two holds both languages."""
    out: list[Person] = []
    while len(out) < n:
        lang = "zh" if zh_every and len(out) % zh_every == 1 else "en"
        name = (rng.choice(_ZH_SURNAME) + rng.choice(_ZH_GIVEN) if lang == "zh"
                else f"{rng.choice(_FIRST)} {rng.choice(_LAST)}")
        if name in taken:
            continue
        taken.add(name)
        facts = tuple((k, rng.choice(kind.values[lang])) for k, kind in enumerate(KINDS))
        out.append(Person(f"{prefix}-{len(out):03d}", name, lang, facts))
    return out


def questions(persons: Iterable[Person], rng: random.Random) -> list[Question]:
    """One question per fact, in one of its kind's phrasings drawn at random."""
    out = []
    for p in persons:
        for k, value in p.facts:
            kind = KINDS[k]
            phrasing = rng.choice(kind.questions[p.lang])
            out.append(Question(phrasing.format(n=p.name), value, p.source_id, kind.key["en"],
                                p.lang))
    return out


def leaks(qs: Sequence[Question], persons: Sequence[Person]) -> list[str]:
    """The bench's questions that occur in what kinject's corpus builder makes of these
    people's records (every training example's text, and the gate's held-out questions):
    empty when the two phrasings are apart, as they must be."""
    from kinject.finetune.augment import build_examples, eval_questions
    from kinject.types import Chunk, content_hash

    seen: list[str] = []
    for p in persons:
        # the record as the JSON parser renders it ("key: value" lines)
        text = "\n".join(f"{k}: {v}" for k, v in p.record().items())
        chunk = Chunk(chunk_id=content_hash(p.source_id, text), doc_id=p.source_id,
                      source_id=p.source_id, text=text, lang=p.lang, kind="json", meta={})
        seen += [f"{e.prompt}\n{e.completion}" for e in build_examples(chunk)]
        seen += [q.question for q in eval_questions(chunk)]
    corpus = "\n".join(seen).casefold()
    return [q.text for q in qs if q.text.casefold() in corpus]
