"""A flood of wrong API keys: refused keys cost no second scrypt, a client that keeps failing
gets 429 with Retry-After, other clients' good keys still work, and an unknown key id is
checked on the same path as a known one (its refusal does not tell which ids exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kinject.api import auth
from kinject.api.auth import KeyStore
from kinject.api.deps import Writer
from kinject.api.errors import install_error_handlers
from kinject.api.ratelimit import FailureLimiter
from kinject.config import ApiSettings

ATTACKER = ("10.0.0.66", 40000)
COLLEAGUE = ("10.0.0.7", 40001)


def _app(store: KeyStore, max_failures: int = 3) -> FastAPI:
    """The real auth dependency and error handlers on one write route."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.keys = store
    app.state.api_settings = ApiSettings()
    app.state.auth_limiter = FailureLimiter(max_failures, 60.0)

    @app.post("/write")
    def write(who: Writer) -> dict[str, str]:
        return {"name": who.name}

    return app


def _wrong(key: str) -> str:
    return key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")


@pytest.fixture()
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.json")


def test_a_client_that_keeps_failing_gets_429_and_others_still_get_in(store: KeyStore) -> None:
    _, good = store.create("ingest-bot", "write")
    _, other = store.create("colleague", "write")
    _, unproven = store.create("new-bot", "write")
    app = _app(store, max_failures=3)
    with TestClient(app, client=ATTACKER) as attacker, \
            TestClient(app, client=COLLEAGUE) as colleague:
        assert attacker.post("/write", headers={"X-API-Key": good}).status_code == 200
        answers = [attacker.post("/write", headers={"X-API-Key": _wrong(good) + str(n)})
                   for n in range(6)]
        assert [r.status_code for r in answers] == [401, 401, 401, 429, 429, 429]
        flooded = answers[-1]
        assert flooded.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(flooded.headers["Retry-After"]) <= 60
        # Another client's good key works; so does a key verified before (no scrypt); a key
        # not verified yet waits like any other.
        assert colleague.post("/write", headers={"X-API-Key": other}).json() == {
            "name": "colleague"}
        assert attacker.post("/write", headers={"X-API-Key": good}).status_code == 200
        assert attacker.post("/write", headers={"X-API-Key": other}).status_code == 200
        assert attacker.post("/write", headers={"X-API-Key": unproven}).status_code == 429


def test_unknown_revoked_and_known_ids_take_the_same_scrypt_path(
        store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    known, key = store.create("known", "write")
    revoked, revoked_key = store.create("gone", "write")
    store.revoke(revoked.id)
    checked: list[Any] = []
    real = auth._verify

    def counting(secret: str, entry: auth.ApiKey) -> bool:
        checked.append(entry)
        return real(secret, entry)

    monkeypatch.setattr(auth, "_verify", counting)
    unknown_key = f"kj_{'0' * 12}_{key.split('_', 2)[2]}"
    for presented in (_wrong(key), unknown_key, revoked_key):
        checked.clear()
        assert store.authenticate(presented) is None
        assert len(checked) == 1, presented  # one scrypt for each, whatever the id
    assert checked[0].id == ""  # a revoked id is checked against the dummy, like an unknown one
    # The same wrong key again costs nothing; the right one still passes, checked once.
    checked.clear()
    for presented in (_wrong(key), unknown_key, revoked_key):
        assert store.authenticate(presented) is None
    assert checked == []
    principal = store.authenticate(key)
    assert principal is not None and principal.key_id == known.id and len(checked) == 1
    assert store.authenticate(key) is not None and len(checked) == 1  # verified: cached
