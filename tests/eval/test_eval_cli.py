"""`kinject eval` over the facade: the report matches what the service answers, the gate's
exit codes, a bad set refused, and two routes compared."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import load_settings
from kinject.eval import metrics
from kinject.integrations.langchain import KinjectVectorStore
from kinject.service import KinjectService

ROWS = [
    {"question": "who founded the guild?", "reference": "Ada Quill", "sources": ["kb/guild"]},
    {"question": "公会是谁创立的?", "reference": "艾达", "language": "zh"},
    {"question": "what is the capital of the moon?", "reference": ""},
]


@pytest.fixture()
def env(tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    # A tiny random LM answers: what it says means nothing, so the tests compare the report
    # with what the service itself returns. free mode: the rag route needs no reader model.
    env = {"KINJECT_DATA_DIR": str(tmp_path / "data"), "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_RAG__LM_RERANK": "0",
           "KINJECT_RAG__MODE": "free"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with KinjectService(load_settings()) as svc:
        KinjectVectorStore(svc).add_texts(
            ["The weather was fine. The guild was founded in 1847 by Ada Quill."],
            ids=["kb/guild"])
    return env


def _set(tmp_path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows or ROWS),
                    encoding="utf-8")
    return path


def _eval(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["eval", *args], env=env)


@pytest.mark.slow
def test_eval_reports_what_the_service_answers(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _eval(env, str(_set(tmp_path)), "--route", "adapter", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report
    assert (out / "report.png").exists() == (importlib.util.find_spec("matplotlib") is not None)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "who founded the guild?" in page and "公会是谁创立的?" in page

    run = report["runs"][0]
    assert report["n"] == 3 and run["target"]["route"] == "adapter"
    with KinjectService(load_settings()) as svc:
        direct = [svc.ask(r["question"], None, None, "adapter") for r in ROWS]
    for row, item, answer in zip(ROWS, run["items"], direct, strict=True):
        assert item["answer"] == answer.text and item["abstained"] == answer.abstained
        assert item["cited"] == [c.source_id for c in answer.citations]
        text = "" if answer.abstained else re.sub(r"\s*\[\d+\]", "", answer.text).strip()
        if row["reference"]:
            assert item["metrics"]["token_f1"] == metrics.token_f1(text, row["reference"])
            assert item["metrics"]["contains"] == metrics.contains(text, row["reference"])
        else:  # abstaining is the right answer
            assert item["metrics"]["exact_match"] == float(answer.abstained)
    agg = run["aggregate"]
    assert agg["abstention_recall"] == float(direct[2].abstained)
    assert agg["abstention_rate"] == pytest.approx(sum(a.abstained for a in direct) / 3)
    assert agg["latency_p50_s"] > 0 and agg["latency_p95_s"] >= agg["latency_p50_s"]
    assert set(run["by_language"]) == {"en", "zh"}


@pytest.mark.slow
def test_fail_under_sets_the_exit_code(env: dict[str, str], tmp_path: Path) -> None:
    path, out = str(_set(tmp_path)), str(tmp_path / "r")
    # closed book cites nothing, so citation recall on the cited question is 0
    failed = _eval(env, path, "--route", "adapter", "--out", out,
                   "--fail-under", "citation_recall=0.5", "--fail-under", "exact_match=0")
    assert failed.exit_code == 1, failed.output
    assert "citation_recall = 0.0000 is below 0.5" in failed.output
    assert "exact_match" not in failed.stderr
    passed = _eval(env, path, "--route", "adapter", "--out", out, "--fail-under", "contains=0")
    assert passed.exit_code == 0, passed.output
    assert "token_f1" in passed.stdout  # the summary table
    bad = _eval(env, path, "--out", out, "--fail-under", "speed=1")
    assert bad.exit_code == 2 and "METRIC=VALUE" in bad.output


def test_a_bad_set_is_refused_naming_the_line(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"question": "no reference"}\n',
                    encoding="utf-8")
    out = tmp_path / "r"
    result = _eval(env, str(path), "--out", str(out))
    assert result.exit_code == 2
    assert "bad.jsonl:2:" in result.output and "reference" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_compare_puts_two_routes_side_by_side(env: dict[str, str], tmp_path: Path) -> None:
    result = _eval(env, str(_set(tmp_path, ROWS[:1])), "--compare", "rag", "adapter",
                   "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rag, adapter = report["runs"]
    assert (rag["target"]["route"], adapter["target"]["route"]) == ("rag", "adapter")
    # the rag route cites the guild's source, closed book cites nothing
    assert rag["items"][0]["cited"][:1] == ["kb/guild"]
    assert rag["items"][0]["metrics"]["citation_recall"] == 1.0
    assert adapter["items"][0]["metrics"]["citation_recall"] == 0.0
    row = report["comparison"]["items"][0]
    assert row["diff"]["citation_recall"] == -1.0 and row["changed"]
    assert row["answer_a"] == rag["items"][0]["answer"]
    assert row["answer_b"] == adapter["items"][0]["answer"]


def test_an_unwritable_report_folder_is_refused_before_any_question_is_asked(
        env: dict[str, str], tmp_path: Path) -> None:
    # Found only after the run, it lost the whole evaluation and exited 1, which a CI gate
    # reads as "a bound was not met".
    taken = tmp_path / "taken"
    taken.write_text("not a folder", encoding="utf-8")
    result = _eval(env, str(_set(tmp_path)), "--route", "adapter", "--out", str(taken))
    assert result.exit_code == 2, result.output
    assert str(taken) in result.output and "cannot write the report" in result.output
