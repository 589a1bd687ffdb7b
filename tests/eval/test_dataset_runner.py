"""Question sets (a bad row refuses the set, naming its line), the scoring rules, the
comparison and the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinject.eval.dataset import EvalItem, EvalSetError, parse_lines
from kinject.eval.runner import (
    AskResult,
    Target,
    compare_targets,
    evaluate,
    failures,
    parse_bounds,
    score,
)


def test_a_set_with_bad_rows_is_refused_naming_every_bad_line() -> None:
    lines = [json.dumps({"question": "who?", "reference": "Ada"}),
             "{not json",
             "",
             json.dumps({"question": "", "reference": "x"}),
             json.dumps({"question": "where?"}),
             json.dumps({"question": "q", "reference": "r", "language": "fr"}),
             json.dumps({"question": "q", "reference": "r", "sources": "kb/a"}),
             json.dumps({"question": "q", "reference": "r", "colour": "red"})]
    with pytest.raises(EvalSetError) as err:
        parse_lines(lines, "set.jsonl")
    message = str(err.value)
    assert "nothing was run" in message
    for n in (2, 4, 5, 6, 7, 8):
        assert f"set.jsonl:{n}:" in message
    assert "set.jsonl:1:" not in message and "set.jsonl:3:" not in message
    with pytest.raises(EvalSetError, match="no question"):
        parse_lines(["", "# a comment"], "empty.jsonl")


def test_rows_read_references_sources_and_abstentions() -> None:
    items = parse_lines([
        json.dumps({"question": " who? ", "reference": "Ada", "sources": ["kb/a", "kb/a"],
                    "language": "en", "id": 7}),
        json.dumps({"question": "who else?", "reference": ""}),
        json.dumps({"question": "谁?", "answer": None, "reference_sources": ["kb/b"]}),
    ])
    assert items[0] == EvalItem(line=1, question="who?", reference="Ada", sources=("kb/a",),
                                language="en", id="7")
    assert items[1].expects_abstention and items[2].expects_abstention
    assert items[2].sources == ("kb/b",)


def _result(text: str, cited: tuple[str, ...] = (), abstained: bool = False) -> AskResult:
    return AskResult(text, cited, abstained, "rag", None, 0.1)


def test_scoring_rules_for_answers_markers_and_abstentions() -> None:
    item = EvalItem(1, "who founded the guild?", "Ada Quill", ("kb/guild",))
    s = score(item, _result("Ada Quill [1]", ("kb/guild", "kb/other")))
    assert s["exact_match"] == 1.0  # the [1] marker is not part of the answer
    assert s["citation_precision"] == 0.5 and s["citation_recall"] == 1.0
    # an abstention on an answerable question scores as the empty answer
    s = score(item, _result("I don't know.", abstained=True))
    assert s["exact_match"] == 0.0 and s["token_f1"] == 0.0 and s["contains"] == 0.0
    # where the reference is empty, abstaining is right and answering is wrong
    none = EvalItem(2, "who founded the moon?", None)
    right = score(none, _result("no relevant source", abstained=True))
    wrong = score(none, _result("Ada Quill"))
    assert right["exact_match"] == right["token_f1"] == 1.0 and right["entity_f1"] is None
    assert wrong["exact_match"] == wrong["token_f1"] == 0.0


def test_evaluate_aggregates_compares_and_gates() -> None:
    items = [EvalItem(1, "who founded the guild?", "Ada Quill", ("kb/guild",)),
             EvalItem(2, "who founded the moon?", None),
             EvalItem(3, "公会在哪里成立?", "北京", language="zh")]
    answers = {
        "rag": {"who founded the guild?": _result("Ada Quill", ("kb/guild",)),
                "who founded the moon?": _result("", abstained=True),
                "公会在哪里成立?": _result("北京")},
        "adapter": {"who founded the guild?": _result("Bob"),
                    "who founded the moon?": _result("Bob"),
                    "公会在哪里成立?": _result("北京")},
    }
    targets = compare_targets("rag", "adapter", "rag", None)
    assert targets == [Target("rag"), Target("adapter")]
    report = evaluate("set.jsonl", items, targets,
                      lambda t: answers[t.route].__getitem__,
                      parse_bounds(["exact_match=0.9"]))
    rag, adapter = report["runs"]
    assert rag["aggregate"]["exact_match"] == 1.0
    assert rag["aggregate"]["abstention_rate"] == pytest.approx(1 / 3)
    assert rag["aggregate"]["abstention_recall"] == 1.0 and rag["aggregate"]["answered_rate"] == 1.0
    assert adapter["aggregate"]["exact_match"] == pytest.approx(1 / 3)
    assert adapter["aggregate"]["abstention_recall"] == 0.0
    assert set(rag["by_language"]) == {"en", "zh"}
    assert rag["aggregate"]["latency_p50_s"] == pytest.approx(0.1)
    assert rag["aggregate"]["n_cached"] == 0
    assert rag["by_language"]["zh"]["exact_match"] == 1.0
    diff = report["comparison"]["items"]
    assert [d["changed"] for d in diff] == [True, True, False]
    assert diff[0]["diff"]["exact_match"] == -1.0
    assert report["comparison"]["aggregate_diff"]["exact_match"] == pytest.approx(-2 / 3)
    # the adapter run is below the bound: the gate fails, naming it
    assert not report["gate"]["passed"]
    assert report["gate"]["failures"] == [
        "adapter / kinject: exact_match = 0.3333 is below 0.9"]


def test_cached_answers_are_counted_not_timed() -> None:
    items = [EvalItem(1, "q1", "a"), EvalItem(2, "q2", "a"), EvalItem(3, "q1", "a")]
    seen: set[str] = set()

    def ask(question: str) -> AskResult:
        cached = question in seen
        seen.add(question)
        return AskResult("a", (), False, "rag", None, 0.0001 if cached else 2.0, cached)

    agg = evaluate("s", items, [Target()], lambda t: ask)["runs"][0]["aggregate"]
    assert agg["n_cached"] == 1
    assert agg["latency_p50_s"] == agg["latency_p95_s"] == 2.0


def test_bounds_parse_and_an_unmeasured_metric_fails_the_gate() -> None:
    assert parse_bounds(["token_f1=0.5", "contains=1"]) == {"token_f1": 0.5, "contains": 1.0}
    for bad in ("token_f1", "nonsense=1", "token_f1=high"):
        with pytest.raises(ValueError, match="fail-under"):
            parse_bounds([bad])
    assert failures({"entity_f1": None}, {"entity_f1": 0.1}) == [
        "entity_f1 was not measured (bound 0.1)"]
    assert failures({"token_f1": 0.5}, {"token_f1": 0.5}) == []


def test_compare_targets_takes_models_too() -> None:
    assert compare_targets("kinject@abc", "kinject-base", "both", None) == [
        Target("both", "abc"), Target("both", "base")]


def test_an_abstention_scores_zero_on_a_reference_of_articles_or_punctuation_only() -> None:
    # A multiple-choice reference ("A") or one that is all punctuation normalises to no
    # tokens: an abstention (the empty answer) must not match it.
    for reference in ("A", "The", "?!"):
        item = EvalItem(1, "Which option is right?", reference)
        s = score(item, _result("no relevant source", abstained=True))
        assert s["exact_match"] == s["contains"] == s["token_f1"] == 0.0, (reference, s)


def test_a_bound_that_is_not_a_finite_number_is_refused() -> None:
    # NaN compares false with everything: the gate would pass whatever the run scored.
    for bad in ("token_f1=nan", "token_f1=inf", "contains=-inf"):
        with pytest.raises(ValueError, match="fail-under"):
            parse_bounds([bad])


def test_a_row_with_a_line_separator_inside_a_string_is_one_row(tmp_path: Path) -> None:
    # JSON allows U+2028 / U+0085 raw inside a string (json.dumps(ensure_ascii=False) writes
    # them so); the set is split on newlines only, not on every Unicode line boundary.
    from kinject.eval.dataset import load_set

    rows = [{"question": "who\u2028founded it?", "reference": "Ada\x85Quill"},
            {"question": "where?", "reference": "Oslo"}]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    items = load_set(path)
    assert [i.question for i in items] == ["who\u2028founded it?", "where?"]
    assert [i.line for i in items] == [1, 2]


def test_a_set_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Windows editors (Notepad, Excel's "UTF-8" CSV/text export) start the file with a BOM.
    from kinject.eval.dataset import load_set

    path = tmp_path / "set.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "who?", "reference": "Ada"}
                                                   ).encode() + b"\n")
    assert [i.question for i in load_set(path)] == ["who?"]


def test_a_run_answered_only_from_the_cache_says_why_latency_is_missing() -> None:
    from kinject.eval.report import summary_lines

    run = {"target": {"label": "rag / kinject"},
           "aggregate": {"n": 35, "n_cached": 35, "latency_p50_s": None,
                         "latency_p95_s": None}}
    lines = summary_lines({"runs": [run]})
    assert any("all 35 answers came from the answer cache" in line for line in lines), lines
    fresh = {**run, "aggregate": {**run["aggregate"], "n_cached": 0, "latency_p50_s": 1.2}}
    assert not any("answer cache" in line for line in summary_lines({"runs": [fresh]}))
