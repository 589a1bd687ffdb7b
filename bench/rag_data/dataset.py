"""Build the bench's passages and questions from the families, deterministically from a seed."""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass

from rag_data.entities import facts, names
from rag_data.families import FAMILIES, LANGS, Family, Split
from rag_data.passages import FORMATS, GROUP, render
from rag_data.questions import ask
from rag_data.unnamed import ABSENT, NEAR, NOTICES

# The family name of the dev questions that name nothing (rag_data/unnamed.py).
UNNAMED = "unnamed"
# The family name of the dev questions about absent things sharing a name's part with a
# passage (rag_data/unnamed.py NEAR), and their answerable neighbours.
NEAR_MISS = "near"


@dataclass(frozen=True)
class Passage:
    source_id: str
    family: str
    lang: str
    fmt: str  # prose, table or json
    text: str
    entities: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    text: str
    family: str
    split: Split
    lang: str
    relation: str
    entity: str
    expected: str | None  # None: the entity does not exist (abstention expected)
    source_id: str | None
    # values that a wrong answer would give: the entity's other facts, and this relation's
    # value for the other entities of the same passage
    wrong: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Sizes:
    entities: int  # per family and language
    questions: int  # answerable ones, per family and language
    unknown: int  # about entities that do not exist, per family (languages alternate)

    def __post_init__(self) -> None:
        if self.entities < 1 or self.questions < 0 or self.unknown < 0:
            raise ValueError(f"bad sizes: {self}")


QUICK = Sizes(entities=4, questions=1, unknown=1)
FULL = Sizes(entities=9, questions=4, unknown=4)


def _source_id(family: str, lang: str, fmt: str, i: int) -> str:
    return f"bench/rag/{family}/{lang}/{fmt}-{i:03d}"


def build(seed: int = 0, sizes: Sizes = QUICK,
          families: tuple[Family, ...] = FAMILIES) -> Dataset:
    """Passages and questions for every family and language. The same seed gives the same
    data; every family draws from its own random stream, so adding one changes no other."""
    passages: list[Passage] = []
    questions: list[Question] = []
    ghosts: list[tuple[Family, str, list[str], int, random.Random]] = []
    for fi, family in enumerate(families):
        for li, lang in enumerate(LANGS):
            rng = random.Random(f"{seed}/{family.name}/{lang}")
            pool = names(family.name, lang)
            rng.shuffle(pool)
            if len(pool) < sizes.entities + sizes.unknown:
                raise ValueError(f"{family.name}/{lang}: {len(pool)} names is too few")
            known = pool[:sizes.entities]
            entity_facts = {n: facts(family.name, lang, n, rng) for n in known}
            fam_passages = _passages(family, lang, known, entity_facts, fi + li, rng)
            passages += fam_passages
            questions += _questions(family, lang, fam_passages, entity_facts, sizes.questions,
                                    rng)
            n_unknown = sizes.unknown // 2 + (sizes.unknown % 2 if (fi % 2) == li else 0)
            ghosts.append((family, lang, pool[sizes.entities:], n_unknown, rng))
    # Entities that do not exist: names of the family's pool that no passage mentions.
    corpus = "\n".join(p.text.lower() for p in passages)
    for family, lang, pool, n_unknown, rng in ghosts:
        free = [g for g in pool if g.lower().removeprefix("the ") not in corpus]
        if len(free) < n_unknown:
            raise ValueError(f"{family.name}/{lang}: too few unused names for {n_unknown} "
                             "questions about nobody")
        for ghost in free[:n_unknown]:
            relation = rng.choice(family.relations)
            questions.append(Question(ask(family.name, relation, lang, ghost, rng),
                                      family.name, family.split, lang, relation, ghost,
                                      None, None))
    if any(f.split == "dev" for f in families):
        unnamed_passages, unnamed_questions = _unnamed(sizes)
        passages += unnamed_passages
        questions += unnamed_questions
    return Dataset(tuple(passages), tuple(questions))


def _unnamed(sizes: Sizes) -> tuple[list[Passage], list[Question]]:
    """The dev notices and questions that name nothing; a quick run asks a third of them."""
    full = sizes.questions >= FULL.questions
    passages, questions = [], []
    for lang in LANGS:
        notices = NOTICES[lang] if full else NOTICES[lang][:2]
        for i, (text, question, expected) in enumerate(notices):
            sid = _source_id(UNNAMED, lang, "prose", i)
            passages.append(Passage(sid, UNNAMED, lang, "prose", text, ()))
            questions.append(Question(question, UNNAMED, "dev", lang, "notice", "", expected,
                                      sid))
        absent = ABSENT[lang] if full else ABSENT[lang][::3]
        questions += [Question(q, UNNAMED, "dev", lang, "absent", "", None, None)
                      for q in absent]
        near = NEAR[lang] if full else NEAR[lang][:2]
        for i, (text, question, expected, ghost) in enumerate(near):
            sid = _source_id(NEAR_MISS, lang, "prose", i)
            passages.append(Passage(sid, NEAR_MISS, lang, "prose", text, ()))
            questions.append(Question(question, NEAR_MISS, "dev", lang, "near", "", expected,
                                      sid))
            questions.append(Question(ghost, NEAR_MISS, "dev", lang, "absent", "", None, None))
    return passages, questions


def _passages(family: Family, lang: str, known: list[str], entity_facts: dict[str, dict[str, str]],
              start: int, rng: random.Random) -> list[Passage]:
    """Entities grouped into passages; formats rotate (prose, table, prose, json, ...) from a
    family-dependent start, so every format appears across families even in a small run."""
    order = ("prose", "table", "prose", "json")
    out: list[Passage] = []
    i, k = 0, start
    while i < len(known):
        fmt = order[k % len(order)]
        assert fmt in FORMATS
        group = known[i:i + GROUP[fmt]]
        if fmt == "table" and len(group) < 2:
            fmt, group = "prose", group[:1]
        rows = [(n, entity_facts[n]) for n in group]
        text = render(fmt, family.name, lang, rows, rng)
        out.append(Passage(_source_id(family.name, lang, fmt, len(out)), family.name, lang,
                           fmt, text, tuple(group)))
        i += len(group)
        k += 1
    return out


def _questions(family: Family, lang: str, passages: list[Passage],
               entity_facts: dict[str, dict[str, str]], n: int,
               rng: random.Random) -> list[Question]:
    where = {e: p for p in passages for e in p.entities}
    pairs = [(e, r) for e in entity_facts for r in family.relations]
    rng.shuffle(pairs)
    # Spread over relations first, then entities: every relation is asked before any twice.
    picked: list[tuple[str, str]] = []
    seen_rel: set[str] = set()
    for e, r in pairs:
        if len(picked) >= n:
            break
        if r not in seen_rel or len(seen_rel) == len(family.relations):
            picked.append((e, r))
            seen_rel.add(r)
    out = []
    for entity, relation in picked:
        passage = where[entity]
        value = entity_facts[entity][relation]
        wrong = {v for r, v in entity_facts[entity].items() if r != relation}
        wrong |= {entity_facts[o][relation] for o in passage.entities if o != entity}
        out.append(Question(ask(family.name, relation, lang, entity, rng), family.name,
                            family.split, lang, relation, entity, value, passage.source_id,
                            tuple(sorted(wrong - {value}))))
    return out


# -- scoring ---------------------------------------------------------------------------------
_MARKER = re.compile(r"\[\d+\]")
_THOUSANDS = re.compile(r"(?<=\d)[,，](?=\d{3})")


def normalise(text: str) -> str:
    """NFKC, lower case, no citation markers, no thousands separators, no spaces around CJK."""
    text = unicodedata.normalize("NFKC", text)
    text = _MARKER.sub(" ", text).lower()
    text = _THOUSANDS.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"(?<=[^\x00-\x7f]) | (?=[^\x00-\x7f])", "", text)


def _contains(text: str, value: str) -> bool:
    value = normalise(value).removeprefix("the ")
    if not value:
        return False
    if value.isascii():  # a whole word or number, not a piece of one ("6" is not in "16")
        return re.search(r"(?<![0-9a-z])" + re.escape(value) + r"(?![0-9a-z])", text) is not None
    return value in text


def contains_expected(answer: str, expected: str) -> bool:
    return _contains(normalise(answer), expected)


def is_right(answer: str, question: Question) -> bool:
    """The expected value is in the answer, and no competing value is: an answer that restates
    the whole passage (or the wrong row of a table) does not count."""
    if question.expected is None:
        return False
    text = normalise(answer)
    if not _contains(text, question.expected):
        return False
    expected = normalise(question.expected)
    return not any(_contains(text, w) for w in question.wrong
                   if normalise(w).removeprefix("the ") not in expected)
