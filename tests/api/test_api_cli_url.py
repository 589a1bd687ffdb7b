"""`kinject search --url` and `kinject ask --url`: a running `kinject serve` answers, printed as
the in-process commands print (table, plain text, JSON), and every failure is one line."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from _api_helpers import Served, publish
from typer.testing import CliRunner

from _wait import until
from kinject.cli import app

pytestmark = pytest.mark.kafka

ENV = {"COLUMNS": "200", "KINJECT_API_KEY": ""}
TEXT = "The Vellmar ferry carries nine goats across the river Osk every Friday."
QUERY = "Vellmar ferry goats"
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ kinject\.")
HIT_KEYS = {"rank", "score", "source_id", "chunk_id", "snippet", "text", "kind", "lang", "meta"}


def _cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.fixture(scope="module")
def ferry(served: Served) -> Served:
    publish(served, {"source_id": "url/ferry", "content": TEXT})

    def found() -> bool:
        with served.client() as c:
            hits = c.get("/v1/search", params={"q": QUERY, "k": 3}).json()["hits"]
        return any(h["source_id"] == "url/ferry" for h in hits)

    until(found, what="the record in search")
    return served


def test_search_over_url_prints_the_servers_hits(ferry: Served) -> None:
    as_json = _cli("search", QUERY, "--url", ferry.url, "--k", "2", "--json",
                   "--api-key", ferry.keys["read"])
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows[0]["source_id"] == "url/ferry" and rows[0]["rank"] == 1
    assert set(rows[0]) == HIT_KEYS and rows[0]["text"] == TEXT
    table = _cli("search", QUERY, "--url", ferry.url, "--filter", "source=url/")
    assert table.exit_code == 0, table.output
    assert "1 hit(s)" in table.stdout and "url/ferry" in table.stdout
    assert "nine goats" in table.stdout


def test_ask_over_url_prints_the_servers_answer_with_its_sources(ferry: Served) -> None:
    question = "How many goats does the Vellmar ferry carry across the Osk?"
    plain = _cli("ask", question, "--url", ferry.url, "--route", "rag")
    assert plain.exit_code == 0, plain.output
    assert "[1] url/ferry (score " in plain.stdout and TEXT in plain.stdout
    assert "route rag" in plain.stdout
    as_json = _cli("ask", question, "--url", ferry.url, "--route", "rag", "--json")
    answer = json.loads(as_json.stdout)
    assert set(answer) == {"text", "citations", "images", "adapter_version", "route",
                           "abstained", "timings"}
    assert answer["citations"][0]["source_id"] == "url/ferry"
    with ferry.client() as c:
        served_answer = c.post("/v1/ask", json={"question": question, "route": "rag"}).json()
    assert answer["text"] == served_answer["text"]


@pytest.fixture()
def failing_server() -> Iterator[str]:
    """A server that fails every request with the status its path starts with (/401/...,
    /503/...) and a body as kinject writes its errors (as a server with
    require_key_for_reads, or one whose index is not ready, answers)."""

    class Failing(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            status = int(self.path.strip("/").split("/")[0])
            message = {401: "this call needs an API key with role 'read'",
                       503: "the index is not ready"}[status]
            body = json.dumps({"error": {"code": "x", "message": message}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _fail

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("command", [["search", QUERY], ["ask", "Which ferry carries goats?"]])
def test_server_failures_are_one_line_and_exit_non_zero(
        served: Served, failing_server: str, command: list[str]) -> None:
    cases = {
        "401": ([*command, "--url", f"{failing_server}/401"],
                "answered 401: this call needs an API key with role 'read'", "--api-key"),
        "404": ([*command, "--url", f"{served.url}/not-kinject"], "answered 404", ""),
        "503": ([*command, "--url", f"{failing_server}/503"],
                "answered 503: the index is not ready", ""),
        "refused": ([*command, "--url", f"http://127.0.0.1:{_closed_port()}"],
                    "cannot reach http://127.0.0.1:", "kinject serve"),
    }
    for name, (args, what, hint) in cases.items():
        result = _cli(*args)
        assert result.exit_code == 2, (name, result.output)
        # the served fixture runs in this process: a log line of its own (outbox, ingest)
        # may land in the captured stderr while the command runs; the command's are the rest
        lines = [ln for ln in result.stderr.strip().splitlines() if not _LOG_LINE.match(ln)]
        assert len(lines) == 1 and lines[0].startswith("error [server_error]: "), (name, lines)
        assert what in lines[0] and hint in lines[0], (name, lines)
        assert result.stdout == "", name
