"""The app without a broker: readiness before anything is loaded, error shapes, CORS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kinject.api.app import create_app
from kinject.config import load_settings
from kinject.service import KinjectService


def _client(tmp_path: Path, **api: object) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, models={"embedder": "hash"}, api=api)
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        yield client


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


def test_not_ready_until_models_load_and_the_index_catches_up(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["checks"]["models_loaded"] is False
    assert body["checks"]["index_caught_up"] is False
    assert client.get("/healthz").json() == {"status": "ok"}


def test_errors_are_json_with_stable_codes(client: TestClient) -> None:
    missing = client.get("/v1/nothing-here")
    wrong_method = client.delete("/v1/search")
    invalid = client.post("/v1/ask", json={"question": ""})
    not_json = client.post("/v1/ask", content=b"{", headers={"Content-Type": "application/json"})
    no_broker = client.get("/v1/lineage/x")
    for r, status, code in ((missing, 404, "not_found"),
                            (wrong_method, 405, "method_not_allowed"),
                            (invalid, 422, "bad_request"), (not_json, 422, "bad_request"),
                            (no_broker, 404, "not_found")):
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code
        assert r.json()["error"]["message"]


def test_publishing_without_a_broker_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    for client in _client(tmp_path, api_key="s3cret-admin"):
        r = client.post("/v1/records", json={"records": [{"source_id": "a", "content": "x"}]},
                        headers={"X-API-Key": "s3cret-admin"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    for client in _client(tmp_path, cors_origins=["https://app.example"]):
        ok = client.options("/v1/search", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "GET"})
        other = client.options("/v1/search", headers={"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "GET"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in other.headers


def test_reads_need_a_key_when_configured(tmp_path: Path) -> None:
    for client in _client(tmp_path, require_key_for_reads=True, api_key="s3cret-admin"):
        assert client.get("/v1/search", params={"q": "x"}).status_code == 401
        r = client.get("/v1/search", params={"q": "x"},
                       headers={"Authorization": "Bearer s3cret-admin"})
        assert r.status_code == 200 and r.json()["hits"] == []
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_the_page_and_its_script_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="search-form"' in page.text and "/static/app.js" in page.text
    # an inline (empty) icon: browsers then do not ask for /favicon.ico, a 404 in the
    # server's log on every visit
    assert '<link rel="icon" href="data:,">' in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "getReader" in script.text


def test_a_streamed_ask_loads_its_model_off_the_event_loop(tmp_path: Path,
                                                           tiny_lm_dir: Path) -> None:
    """The model a streamed /v1/ask needs (the generator on a cold server, a named adapter
    version on first use) loads in a worker thread: on the event loop it would stall every
    other request (health checks included) for the whole load."""
    import asyncio

    settings = load_settings(data_dir=tmp_path, models={"embedder": "hash",
                                                        "generator": str(tiny_lm_dir)})
    on_loop: list[bool] = []
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        load = svc.answering.rag_service

        def spied() -> object:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return load()

        svc.answering.rag_service = spied  # type: ignore[method-assign]
        r = client.post("/v1/ask", json={"question": "When does the ferry leave?",
                                         "stream": True})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert on_loop and not any(on_loop)


def test_search_without_a_mode_uses_the_servers_search_mode(tmp_path: Path) -> None:
    """GET /v1/search with no ``mode`` searches as the server is configured
    (index.search_mode), as the remote LangChain and LlamaIndex classes say it does."""
    from kinject.integrations.langchain import KinjectVectorStore

    settings = load_settings(data_dir=tmp_path, models={"embedder": "hash"},
                             index={"search_mode": "bm25"})
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        KinjectVectorStore(svc).add_texts(["Red kites nest in the old oaks of Marrow Hill.",
                                           "The ferry to Vask sails at dawn."],
                                          ids=["kb/kites", "kb/ferry"])

        def scores(**params: str) -> list[float]:
            r = client.get("/v1/search", params={"q": "kites oaks", "k": "2", **params})
            assert r.status_code == 200, r.text
            return [h["score"] for h in r.json()["hits"]]

        assert scores() == scores(mode="bm25") != scores(mode="hybrid")
