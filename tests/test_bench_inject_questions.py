"""The injection bench's questions (bench/inject_questions.py) are phrased apart from what
kinject's corpus builder trains on and the gate asks: closed-book accuracy measured on them is
knowledge the adapter can use, not recall of a memorised training string."""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from inject_questions import KINDS, leaks, people, questions  # noqa: E402


def _many() -> tuple[list, list]:
    rng = random.Random(7)
    persons = people(24, rng, set(), "people/t")
    # every phrasing of every kind, for every person
    qs = [replace(q, text=phrasing.format(n=p.name))
          for p in persons for q in questions([p], rng)
          for phrasing in KINDS[[k.key["en"] for k in KINDS].index(q.kind)].questions[p.lang]]
    return persons, qs


def test_no_bench_question_occurs_in_the_corpus_builders_output() -> None:
    persons, qs = _many()
    assert {p.lang for p in persons} == {"en", "zh"}
    assert len(KINDS) >= 8 and len({q.kind for q in qs}) == len(KINDS)
    assert leaks(qs, persons) == []


def test_the_leak_check_catches_a_training_phrasing() -> None:
    """A question the builder itself trains on, or the gate's held-out one, is flagged."""
    persons, qs = _many()
    en = next(p for p in persons if p.lang == "en")
    zh = next(p for p in persons if p.lang == "zh")
    trained = replace(qs[0], text=f"What is the instrument of {en.name}?")
    held_out = replace(qs[0], text=f"记录中{zh.name}对应的宠物是哪个？")
    assert leaks([*qs[:5], trained, held_out], persons) == [trained.text, held_out.text]


def test_each_batch_of_two_holds_both_languages_and_names_are_unique() -> None:
    taken: set[str] = set()
    rng = random.Random(0)
    a, b = people(2, rng, taken, "people/b1"), people(2, rng, taken, "people/b2")
    assert [p.lang for p in a] == [p.lang for p in b] == ["en", "zh"]
    assert len({p.name for p in a + b}) == 4 and len(taken) == 4
    record = b[1].record()
    assert list(record)[0] == "姓名" and len(record) == 1 + len(KINDS)
