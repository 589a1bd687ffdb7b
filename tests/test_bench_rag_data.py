"""The RAG quality bench's data (bench/rag_data): a fixed dev/test split that kinject's code
cannot have seen, answers that are really in their passages, and questions about nobody."""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from rag_data.dataset import FULL, NEAR_MISS, QUICK, UNNAMED, build, is_right  # noqa: E402
from rag_data.families import DEV, FAMILIES, TEST, TEST_RELATION_WORDS  # noqa: E402
from rag_data.passages import PROSE, TABLE  # noqa: E402
from rag_data.questions import QUESTIONS  # noqa: E402


def _kinject_source(with_tests: bool = False) -> str:
    """kinject's code, and with ``with_tests`` its tests (but this file)."""
    folders = [ROOT / "src" / "kinject"] + ([ROOT / "tests"] if with_tests else [])
    return "\n".join(p.read_text(encoding="utf-8")
                     for folder in folders for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.suffix in (".py", ".js", ".html", ".json", ".txt")
                     and p.resolve() != Path(__file__).resolve())


def _without_prose(path: Path) -> str:
    """A Python file's code and string literals, without its comments and docstrings (prose
    about the code, where "an error raised" is no cue); other files as they are."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.add((first.lineno, first.col_offset))
    return " ".join(tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                    if tok.type != tokenize.COMMENT
                    and not (tok.type == tokenize.STRING and tok.start in docstrings))


def _kinject_code() -> str:
    """What kinject's answering and training code could match a question with: its Python
    code and string literals (no comments, no docstrings) and its web page, not the licence
    texts shipped beside the general-text corpus."""
    folder = ROOT / "src" / "kinject"
    return "\n".join(_without_prose(p) for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.suffix in (".py", ".js", ".html", ".json"))


def _has_word(text: str, word: str) -> bool:
    word = word.lower()
    if word.isascii():
        return re.search(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", text) is not None
    return word in text


def test_the_split_is_fixed_and_the_families_are_disjoint() -> None:
    assert len(FAMILIES) >= 12
    assert {f.name for f in DEV}.isdisjoint({f.name for f in TEST})
    dev_relations = {r for f in DEV for r in f.relations}
    assert dev_relations.isdisjoint({r for f in TEST for r in f.relations})
    # Each kind of knowledge is tested on a family tuning never saw.
    for kind in ("people", "organisations", "products", "places", "procedures", "technical"):
        assert any(f.kind == kind for f in DEV), kind
        assert any(f.kind == kind for f in TEST), kind


def test_every_family_speaks_both_languages_in_passages_and_questions() -> None:
    for f in FAMILIES:
        for lang in ("en", "zh"):
            assert len(PROSE[f.name][lang]) >= 3
            assert set(TABLE[f.name][lang][1]) == set(f.relations)
            for r in f.relations:
                assert QUESTIONS[f.name][r][lang], (f.name, r, lang)


def test_questions_are_phrased_apart_from_the_passages() -> None:
    """No question phrasing, less its name, is a piece of one of its family's passages."""
    for f in FAMILIES:
        for lang in ("en", "zh"):
            passages = " ".join(PROSE[f.name][lang]).lower()
            for r in f.relations:
                for q in QUESTIONS[f.name][r][lang]:
                    for piece in q.lower().split("{name}"):
                        piece = piece.strip(" ?？,，'’")
                        long_enough = len(piece.split()) >= 3 if lang == "en" else len(piece) >= 4
                        assert not (long_enough and piece in passages), (f.name, q)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data() -> None:
    assert build(3, QUICK) == build(3, QUICK)
    assert build(3, QUICK).passages != build(4, QUICK).passages


@pytest.mark.parametrize("sizes", [QUICK, FULL], ids=["quick", "full"])
def test_answers_are_in_their_passage_and_unknown_entities_in_none(sizes: object) -> None:
    data = build(0, sizes)  # type: ignore[arg-type]
    text = {p.source_id: p.text for p in data.passages}
    corpus = "\n".join(text.values()).lower()
    assert len(text) == len(data.passages)  # source ids are unique
    for q in data.questions:
        if q.expected is None:
            assert q.source_id is None
            # questions that name nothing (UNNAMED) or a thing sharing only a part of its name
            # with a passage (NEAR_MISS) carry no entity; every other one names an absent one
            assert q.family in (UNNAMED, NEAR_MISS) or (
                q.entity.lower().removeprefix("the ") not in corpus), q.entity
        else:
            assert q.source_id is not None
            assert q.expected in text[q.source_id], q
            assert q.entity in text[q.source_id] or q.entity.capitalize() in text[q.source_id]
    splits = Counter((q.split, q.lang, q.expected is None) for q in data.questions)
    for split in ("dev", "test"):
        for lang in ("en", "zh"):
            assert splits[(split, lang, False)] > 0 and splits[(split, lang, True)] > 0
    assert {p.fmt for p in data.passages} == {"prose", "table", "json"}


def test_an_answer_must_be_the_value_not_the_whole_passage() -> None:
    data = build(0, QUICK)
    text = {p.source_id: p.text for p in data.passages}
    q = next(q for q in data.questions if q.family == "recipe" and q.expected is not None)
    assert q.expected is not None and q.source_id is not None
    assert is_right(f"{q.expected} [1]", q)
    assert not is_right(text[q.source_id], q)  # it holds every other fact too
    assert not is_right("Not in the knowledge base.", q)
    numbers = next(q for q in data.questions if q.expected and q.expected.isdigit())
    assert not is_right(f"1{numbers.expected}9", numbers)  # a digit run inside another number


def test_no_test_family_question_appears_in_kinject_or_its_tests() -> None:
    """kinject's code (answering path, prompts, training data builders) and its tests never
    hold a question phrasing of a test family, in any name."""
    source = _kinject_source(with_tests=True).lower()
    for f in TEST:
        for r in f.relations:
            for lang in ("en", "zh"):
                for q in QUESTIONS[f.name][r][lang]:
                    pieces = [p for p in q.lower().split("{name}") if p]
                    if not all(p in source for p in pieces):
                        continue  # the quick check; the pattern below is slow on all the code
                    name = r"[^\n?？。]{1,40}?"  # any name, inside one question
                    pattern = re.escape(q.lower()).replace(re.escape("{name}"), name)
                    assert re.search(pattern, source) is None, (f.name, q)


def test_no_test_family_relation_word_appears_in_kinject() -> None:
    """No cue list, prompt or training template of kinject names a test family's relation
    (the cue-list reader that did is gone: issue 15)."""
    source = _kinject_code().lower()
    found = {f"{family}: {w}" for family, words in TEST_RELATION_WORDS.items() for w in words
             if _has_word(source, w)}
    assert not found, sorted(found)
