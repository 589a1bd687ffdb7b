"""`kinject ask`: the answer with numbered sources, as text or JSON."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import load_settings
from kinject.integrations.langchain import KinjectVectorStore
from kinject.service import KinjectService


@pytest.fixture()
def env(tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    env = {"KINJECT_DATA_DIR": str(tmp_path), "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with KinjectService(load_settings()) as svc:
        KinjectVectorStore(svc).add_texts(
            ["The weather was fine. The guild was founded in 1847 by Ada Quill."],
            ids=["kb/guild"])
    return env


def test_ask_prints_the_answer_with_numbered_sources(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["ask", "who founded the guild", "--route", "rag"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "[1] kb/guild" in result.output
    assert "The guild was founded in 1847 by Ada Quill." in result.output
    out = CliRunner().invoke(app, ["ask", "who founded the guild", "--json"], env=env)
    answer = json.loads(out.stdout)
    assert answer["citations"][0]["source_id"] == "kb/guild" and answer["route"] == "rag"


def test_ask_rejects_bad_input_before_loading_models(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["ask", "who?", "--route", "magic"], env=env)
    assert result.exit_code == 2 and "route" in result.output
    result = CliRunner().invoke(app, ["ask", "who?", "--filter", "nonsense"], env=env)
    assert result.exit_code == 2
