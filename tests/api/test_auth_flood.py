"""A flood of wrong API keys: refused keys cost no second scrypt, a client that keeps failing
gets 429 with Retry-After, other clients' good keys still work, and an unknown key id is
checked on the same path as a known one (its refusal does not tell which ids exist). A
client cannot dodge its limit by forging X-Forwarded-For, rotating IPv6 addresses or
sending a burst at once, and scrypt checks running at once are bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kinject.api import auth
from kinject.api.auth import KeyStore
from kinject.api.deps import Reader, Writer
from kinject.api.errors import install_error_handlers
from kinject.api.ratelimit import FailureLimiter
from kinject.config import ApiSettings

ATTACKER = ("10.0.0.66", 40000)
COLLEAGUE = ("10.0.0.7", 40001)


def _app(store: KeyStore, max_failures: int = 3, max_checks: int = 16,
         require_key_for_reads: bool = False) -> FastAPI:
    """The real auth dependency and error handlers on one write route and one read route."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.keys = store
    app.state.api_settings = ApiSettings(require_key_for_reads=require_key_for_reads)
    app.state.auth_limiter = FailureLimiter(max_failures, 60.0)
    app.state.auth_checks = threading.BoundedSemaphore(max_checks)

    @app.post("/write")
    def write(who: Writer) -> dict[str, str]:
        return {"name": who.name}

    @app.get("/read")
    def read(who: Reader) -> dict[str, str]:
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


@contextmanager
def _served(app: FastAPI, **kw: Any) -> Iterator[str]:
    """The app under uvicorn as `kinject serve` runs it; yields its URL."""
    from kinject.serve import ApiServer

    with ApiServer(app, **kw) as server:
        yield server.url


def test_forged_forwarded_for_does_not_make_new_clients(store: KeyStore) -> None:
    _, good = store.create("ingest-bot", "write")
    with _served(_app(store, max_failures=3)) as url:
        codes = [httpx.post(f"{url}/write", headers={
            "X-API-Key": _wrong(good) + str(n), "X-Forwarded-For": f"198.51.100.{n}"},
            timeout=30).status_code for n in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_a_trusted_proxy_names_the_client(store: KeyStore) -> None:
    _, good = store.create("ingest-bot", "write")
    with _served(_app(store, max_failures=3), trusted_proxies=["127.0.0.1"]) as url:

        def post(n: int, forwarded: str) -> int:
            return httpx.post(f"{url}/write", headers={
                "X-API-Key": _wrong(good) + str(n), "X-Forwarded-For": forwarded},
                timeout=30).status_code

        # behind the proxy, each client has its own limit
        assert [post(n, "198.51.100.7") for n in range(4)] == [401, 401, 401, 429]
        assert post(9, "198.51.100.8") == 401


def test_ipv6_clients_are_limited_by_their_64(store: KeyStore) -> None:
    _, good = store.create("ingest-bot", "write")
    app = _app(store, max_failures=3)
    hosts = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::9"]
    answers = []
    for n, host in enumerate(hosts + ["2001:db8:1:2::77"]):
        with TestClient(app, client=(host, 40000)) as c:
            answers.append(c.post("/write", headers={"X-API-Key": _wrong(good) + str(n)}))
    assert [r.status_code for r in answers] == [401, 401, 401, 429]
    with TestClient(app, client=("2001:db8:1:3::1", 40000)) as c:  # another /64
        assert c.post("/write", headers={"X-API-Key": _wrong(good)}).status_code == 401


class _HeldChecks:
    """auth._verify that waits until ``release`` (a hang guard bounds the wait), counting
    the checks that got as far as scrypt."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = auth._verify
        self.release = threading.Event()
        self.entered = 0
        self.changed = threading.Condition()
        monkeypatch.setattr(auth, "_verify", self)

    def __call__(self, secret: str, entry: auth.ApiKey) -> bool:
        with self.changed:
            self.entered += 1
            self.changed.notify_all()
        self.release.wait(30)
        return self.real(secret, entry)

    def wait_entered(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.entered >= n, 30), self.entered


def test_a_burst_of_wrong_keys_cannot_outrun_the_limit(
        store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _, good = store.create("ingest-bot", "write")
    held = _HeldChecks(monkeypatch)
    answers: list[int] = []
    answered = threading.Condition()
    with _served(_app(store, max_failures=3)) as url:

        def post(n: int) -> None:
            code = httpx.post(f"{url}/write", headers={"X-API-Key": _wrong(good) + str(n)},
                              timeout=60).status_code
            with answered:
                answers.append(code)
                answered.notify_all()

        threads = [threading.Thread(target=post, args=(n,), daemon=True) for n in range(6)]
        for t in threads:
            t.start()
        try:
            # While three checks are in scrypt, the other three are refused at once: each
            # check took its failure slot before it started.
            held.wait_entered(3)
            with answered:
                assert answered.wait_for(lambda: len(answers) >= 3, 30), answers
                assert answers == [429, 429, 429] and held.entered == 3
        finally:
            held.release.set()
            for t in threads:
                t.join(60)
    assert sorted(answers) == [401, 401, 401, 429, 429, 429]


def test_a_good_key_gives_its_slot_back(store: KeyStore) -> None:
    keys = [store.create(f"bot-{n}", "write")[1] for n in range(3)]
    with TestClient(_app(store, max_failures=2), client=ATTACKER) as c:
        assert [c.post("/write", headers={"X-API-Key": k}).status_code for k in keys] == [
            200, 200, 200]
        assert [c.post("/write", headers={"X-API-Key": _wrong(keys[0]) + str(n)}).status_code
                for n in range(3)] == [401, 401, 429]


def test_key_checks_running_at_once_are_bounded(
        store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _, good = store.create("ingest-bot", "write")
    held = _HeldChecks(monkeypatch)
    app = _app(store, max_failures=10, max_checks=1)
    first: list[httpx.Response] = []
    with _served(app) as url:
        slow = threading.Thread(target=lambda: first.append(httpx.post(
            f"{url}/write", headers={"X-API-Key": good}, timeout=60)), daemon=True)
        slow.start()
        try:
            held.wait_entered(1)
            # the one check slot is taken: another check is refused at once, not queued
            busy = httpx.post(f"{url}/write", headers={"X-API-Key": _wrong(good)}, timeout=60)
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "unavailable"
            assert busy.headers["Retry-After"] == "1"
            assert held.entered == 1
        finally:
            held.release.set()
            slow.join(60)
        assert first[0].status_code == 200
        # the slot is free again, and the refusal did not count as the client's failure
        again = httpx.post(f"{url}/write", headers={"X-API-Key": _wrong(good)}, timeout=60)
        assert again.status_code == 401


def test_any_key_on_a_read_is_anonymous_and_never_counts_as_a_failure(store: KeyStore) -> None:
    # The OpenAI SDK always sends a key (api_key="EMPTY"): with anonymous reads on, reads
    # pass whatever key they carry, and none of them uses up the client's failure limit.
    _, good = store.create("ingest-bot", "write")
    with TestClient(_app(store, max_failures=3), client=ATTACKER) as c:
        for key in ("EMPTY", "sk-proj-123", _wrong(good) + "1", _wrong(good) + "2",
                    _wrong(good) + "3"):
            r = c.get("/read", headers={"Authorization": f"Bearer {key}"})
            assert r.json() == {"name": "anonymous"}, (key, r.text)
        # a real key on a read is still recognised (a read route may show its role more)
        assert c.get("/read", headers={"X-API-Key": good}).json() == {"name": "ingest-bot"}
        # writes still need a real key, and the client's failures start from zero
        assert [c.post("/write", headers={"X-API-Key": k}).status_code
                for k in ("EMPTY", _wrong(good) + "4", _wrong(good) + "5", good)] == [
            401, 401, 401, 200]
        assert c.post("/write", headers={"X-API-Key": _wrong(good) + "6"}).status_code == 429


def test_with_keys_required_for_reads_a_wrong_key_on_a_read_is_refused(
        store: KeyStore) -> None:
    _, reader = store.create("dashboard", "read")
    with TestClient(_app(store, require_key_for_reads=True), client=COLLEAGUE) as c:
        assert c.get("/read", headers={"Authorization": "Bearer EMPTY"}).status_code == 401
        assert c.get("/read").status_code == 401
        assert c.get("/read", headers={"X-API-Key": reader}).json() == {"name": "dashboard"}
