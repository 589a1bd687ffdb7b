"""API keys: writes and admin calls need the right role; reads are open unless configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _api_helpers import Served

from kinject.api.auth import KeyStore

pytestmark = pytest.mark.kafka

RECORD = {"records": [{"source_id": "auth/doc", "content": "The vault opens at nine."}]}


def test_writes_need_a_write_key(served: Served) -> None:
    with httpx.Client(base_url=served.url) as c:
        none = c.post("/v1/records", json=RECORD)
        wrong = c.post("/v1/records", json=RECORD, headers={"Authorization": "Bearer kj_x_y"})
        garbage = c.post("/v1/records", json=RECORD, headers={"X-API-Key": "letmein"})
        read_only = c.post("/v1/records", json=RECORD,
                           headers={"X-API-Key": served.keys["read"]})
        ok = c.post("/v1/records", json=RECORD, headers={"X-API-Key": served.keys["write"]})
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    assert none.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert garbage.status_code == 401
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "forbidden"
    assert ok.status_code == 202 and ok.json()["accepted"] == 1


def test_admin_calls_need_an_admin_key(served: Served) -> None:
    with served.client("write") as c:
        assert c.get("/v1/dlq").status_code == 403
    with served.client("admin") as c:
        r = c.get("/v1/dlq")
    assert r.status_code == 200 and r.json()["count"] >= 0


def test_reads_are_open_by_default_with_any_key_but_writes_are_not(served: Served) -> None:
    # As vLLM, llama.cpp's server and Ollama do: the OpenAI SDK always sends a key.
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/v1/models").status_code == 200
        for key in ("EMPTY", "sk-anything", "kj_nope_nope"):
            read = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert read.status_code == 200, (key, read.text)
            write = c.post("/v1/records", json=RECORD,
                           headers={"Authorization": f"Bearer {key}"})
            assert write.status_code == 401, (key, write.text)


def test_revoked_key_is_refused_without_a_restart(served: Served) -> None:
    store = KeyStore(served.settings.data_dir / "api_keys.json")
    entry, key = store.create("short-lived", "write")
    with httpx.Client(base_url=served.url, headers={"X-API-Key": key}) as c:
        assert c.post("/v1/records", json=RECORD).status_code == 202
        assert [k.id for k in store.revoke(entry.id)] == [entry.id]
        assert c.post("/v1/records", json=RECORD).status_code == 401


def test_keys_are_stored_hashed(served: Served) -> None:
    stored = (served.settings.data_dir / "api_keys.json").read_text()
    for key in served.keys.values():
        assert key not in stored and key.split("_", 2)[2] not in stored
    mode = (served.settings.data_dir / "api_keys.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_limits_body_and_question_size(served: Served) -> None:
    with served.client("write") as c:
        big = c.post("/v1/records", content=b'{"records": [' + b" " * (17 * 1024 * 1024) + b"]}",
                     headers={"Content-Type": "application/json"})
        long_q = c.post("/v1/ask", json={"question": "why " * 1000})
        uri = c.post("/v1/records", json={"records": [{"source_id": "x",
                                                       "uri": "/etc/passwd"}]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    assert long_q.status_code == 413 and long_q.json()["error"]["code"] == "too_large"
    assert uri.status_code == 422 and uri.json()["error"]["code"] == "bad_request"


def test_a_chunked_body_over_the_limit_is_413_not_400(served: Served) -> None:
    """No Content-Length (chunked transfer): the limit still answers 413 too_large."""

    def chunks() -> Iterator[bytes]:
        yield b'{"records": ['
        for _ in range(17):
            yield b" " * (1024 * 1024)
        yield b"]}"

    with served.client("write") as c:
        r = c.post("/v1/records", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_a_lone_surrogate_is_a_clear_400(served: Served) -> None:
    body = b'{"records": [{"source_id": "s/1", "content": "Orrin \\ud800 pier"}]}'
    with served.client("write") as c:
        r = c.post("/v1/records", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "lone UTF-16 surrogate" in r.json()["error"]["message"]
    assert "codec" not in r.json()["error"]["message"]


def test_cors_is_off_by_default(served: Served) -> None:
    r = httpx.options(f"{served.url}/v1/search", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_keys_never_reach_the_log(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from kinject.logs import RedactingFilter

    logger = logging.getLogger("kinject.test.redact")
    handler_filter = RedactingFilter()
    key = "kj_abc123_S3cretS3cretS3cret"
    with caplog.at_level(logging.INFO, logger="kinject.test.redact"):
        logger.addFilter(handler_filter)
        try:
            logger.info("request headers: %s", {"Authorization": f"Bearer {key}"})
            logger.info("X-API-Key: %s", key)
            logger.info("got key %s", key)
        finally:
            logger.removeFilter(handler_filter)
    assert key not in caplog.text and "S3cret" not in caplog.text
