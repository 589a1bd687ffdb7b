"""POST /v1/eval on a live server (admin only, size-capped, JSONL body or multipart), and
`kinject eval --url` against the same server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import Served
from typer.testing import CliRunner

from kinject.cli import app

pytestmark = pytest.mark.kafka

ROWS = [{"question": "who founded the guild?", "reference": "Ada Quill"},
        {"question": "what is the capital of the moon?", "reference": None}]
BODY = "".join(json.dumps(r) + "\n" for r in ROWS)
JSONL = {"Content-Type": "application/x-ndjson"}


def _asked(served: Served, question: str) -> dict[str, Any]:
    with served.client() as c:
        r = c.post("/v1/ask", json={"question": question, "route": "adapter"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_eval_needs_an_admin_key(served: Served) -> None:
    with served.client() as c:
        assert c.post("/v1/eval", content=BODY, headers=JSONL).status_code == 401
    for role in ("read", "write"):
        with served.client(role) as c:
            r = c.post("/v1/eval", content=BODY, headers=JSONL)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_eval_returns_the_report_of_an_uploaded_set(served: Served) -> None:
    with served.client("admin") as c:
        r = c.post("/v1/eval", params={"route": "adapter"}, content=BODY, headers=JSONL)
        assert r.status_code == 200, r.text
        report = r.json()
        files = {"file": ("set.jsonl", BODY.encode(), "application/octet-stream")}
        multipart = c.post("/v1/eval", params={"route": "adapter"}, files=files)
    assert multipart.status_code == 200, multipart.text
    assert report["n"] == 2 and report["gate"]["passed"]
    run = report["runs"][0]
    assert run["target"]["route"] == "adapter"
    for row, item in zip(ROWS, run["items"], strict=True):
        assert item["answer"] == _asked(served, row["question"])["text"]
    assert [i["answer"] for i in multipart.json()["runs"][0]["items"]] == [
        i["answer"] for i in run["items"]]
    assert run["aggregate"]["n_unanswerable"] == 1


def test_eval_refuses_bad_and_oversized_sets(served: Served) -> None:
    with served.client("admin") as c:
        bad = c.post("/v1/eval", content=BODY + '{"question": 3, "reference": "x"}\n',
                     headers=JSONL)
        assert bad.status_code == 400 and "body:3:" in bad.json()["error"]["message"]
        cap = served.settings.api.max_eval_bytes
        huge = c.post("/v1/eval", content=BODY + " " * cap, headers=JSONL)
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
        many = "".join(json.dumps({"question": f"q{i}", "reference": "r"}) + "\n"
                       for i in range(served.settings.api.max_eval_questions + 1))
        assert c.post("/v1/eval", content=many, headers=JSONL).status_code == 413
        no_file = c.post("/v1/eval", files={"other": ("x", b"y")})
        assert no_file.status_code == 400 and "file" in no_file.json()["error"]["message"]
        assert c.post("/v1/eval", params={"adapter": "nope"}, content=BODY,
                      headers=JSONL).status_code == 404


def test_the_cli_evaluates_a_server_over_http(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(BODY, encoding="utf-8")
    args = ["eval", str(path), "--url", served.url, "--route", "adapter",
            "--out", str(tmp_path / "r"), "--json"]
    result = CliRunner().invoke(app, [*args, "--api-key", served.keys["read"]])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["runs"][0]["items"]
    assert [i["answer"] for i in items] == [_asked(served, r["question"])["text"] for r in ROWS]
    gated = CliRunner().invoke(app, [*args, "--fail-under", "citation_precision=0.5"])
    assert gated.exit_code == 1  # closed book cites nothing: precision is not measured
    assert "citation_precision was not measured" in gated.output
    unknown = CliRunner().invoke(app, [*args, "--adapter", "nope"])
    assert unknown.exit_code == 2 and "404" in unknown.output
