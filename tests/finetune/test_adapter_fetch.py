"""Fetch by event: two `kinject serve` processes with data dirs of their own on one broker.
A promotion on A names where its bytes are (finetune.publish_url); B fetches the archive over
HTTP with an admin key of A, checks the weights' sha256 against the event and serves the
version. Bytes that do not hash to what the event announced are refused and B keeps serving
what it served; once A's bytes are whole again, B's next try takes them."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _adapter_helpers import make_adapter
from _hosts import serve_two_hosts

from _wait import until
from kinject.config import KafkaSettings
from kinject.stream.adapter_events import EVENT_VERSION

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kafka, pytest.mark.slow]

KEY_A, KEY_B = "fetch-admin-key-of-a", "fetch-admin-key-of-b"
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture()
def two_hosts(tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with serve_two_hosts(tmp_path, kafka_bootstrap, tiny_lm_dir, monkeypatch, name="fetch",
                         keys=(KEY_A, KEY_B),
                         finetune=("materialise_corpus = false",
                                   f'materialise_corpus = false\nfetch_api_key = "{KEY_A}"\n'
                                   "fetch_retry_s = 0.5")) as hosts:
        yield hosts


def _adapters(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/adapters", timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _served(url: str, key: str) -> str | None:
    """The version answering closed-book questions on that server now."""
    r = httpx.post(f"{url}/v1/ask", timeout=120, headers={"Authorization": f"Bearer {key}"},
                   json={"question": f"Who founded the Marrow Institute? ({time.time()})",
                         "route": "adapter"})
    assert r.status_code == 200, r.text
    version: str | None = r.json()["adapter_version"]
    return version


def _activate(url: str, version: str) -> None:
    r = httpx.post(f"{url}/v1/adapters/{version}/activate", timeout=60,
                   headers={"Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 200, r.text


def _publish(kafka: KafkaSettings, bootstrap: str, event: dict[str, Any]) -> None:
    from kinject.stream.clients import make_producer
    from kinject.stream.topics import ensure_topics

    producer = make_producer(kafka, bootstrap)
    try:
        producer.send(ensure_topics(kafka, bootstrap).adapters, key=b"active",
                      value=json.dumps(event).encode()).get(timeout=30)
    finally:
        producer.close()


def test_a_replica_fetches_checks_and_serves_what_another_host_promotes(
        two_hosts: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b, reg_a, reg_b = two_hosts["a"], two_hosts["b"], two_hosts["reg_a"], two_hosts["reg_b"]
    v0 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a0", seed=1), base_model="tiny",
                   lineage=["kb/a0"]).version
    v1 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a1", seed=2), base_model="tiny",
                   lineage=["kb/a1"]).version
    assert reg_b.names() == []
    caplog.set_level("INFO")

    # promoted on A: B fetches it over HTTP, checks it, and serves it
    _activate(a, v0)
    until(lambda: _adapters(b)["active"] == v0, 60, "B to take v0 from A")
    assert [x["version"] for x in _adapters(b)["adapters"]] == [v0]
    assert _served(b, KEY_B) == v0
    for name in (WEIGHTS, "adapter_config.json"):
        assert (reg_b.path(v0) / name).read_bytes() == (reg_a.path(v0) / name).read_bytes()
    assert reg_b.get(v0).lineage == ("kb/a0",)  # the manifest came along
    assert any("fetched adapter" in r.getMessage() and v0[:12] in r.getMessage()
               for r in caplog.records)

    # A's copy of v1 is corrupted (same size, other bytes): B refuses what it downloads and
    # keeps serving v0
    weights = reg_a.path(v1) / WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[:-64] + bytes(64))
    caplog.clear()
    _activate(a, v1)
    until(lambda: any("not to the announced" in r.getMessage() and v1[:12] in r.getMessage()
                      for r in caplog.records), 60, "B to refuse the corrupted v1")
    until(lambda: sum(f"/v1/adapters/{v1}/archive" in r.getMessage()
                      for r in caplog.records) >= 3, 60, "B to try again")
    refusals = [r for r in caplog.records if "not to the announced" in r.getMessage()]
    assert len(refusals) == 1  # tried again and again, said once
    assert _adapters(b)["active"] == v0
    assert [x["version"] for x in _adapters(b)["adapters"]] == [v0]  # nothing half-installed
    assert _served(b, KEY_B) == v0
    assert not [p for p in reg_b.versions_dir.iterdir() if p.name.startswith(".")]

    # once A's bytes are whole, B's next try fetches them and serves v1
    weights.write_bytes(good)
    until(lambda: _adapters(b)["active"] == v1, 60, "B to take v1 on a retry")
    assert _served(b, KEY_B) == v1

    # an event whose sha256 is not the version's is refused without a download
    caplog.clear()
    v2 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a2", seed=3), base_model="tiny",
                   lineage=[]).version
    _publish(two_hosts["kafka"], two_hosts["bootstrap"], {
        "v": EVENT_VERSION, "type": "promoted", "reason": "promoted", "version": v2,
        "sha256": "0" * 64, "previous": v1, "at": time.time(), "origin": "elsewhere",
        "url": f"{a}/v1/adapters/{v2}/archive"})
    until(lambda: any("announces sha256 000000000000" in r.getMessage()
                      for r in caplog.records), 60, "B to refuse the event's hash")
    assert _adapters(b)["active"] == v1 and v2 not in reg_b.names()
    assert _served(b, KEY_B) == v1

    # the key B fetches with never reaches a log line
    assert KEY_A not in caplog.text


def test_the_archive_route_is_for_admin_keys_and_registry_names_only(
        two_hosts: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path) -> None:
    a, reg_a = two_hosts["a"], two_hosts["reg_a"]
    v0 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a0", seed=1), base_model="tiny",
                   lineage=[]).version
    path = f"{a}/v1/adapters/{v0}/archive"
    assert httpx.get(path, timeout=30).status_code == 401
    assert httpx.get(path, timeout=30,
                     headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 401
    from kinject.api.auth import KEYS_FILE, KeyStore

    _, reader = KeyStore(two_hosts["data_a"] / KEYS_FILE).create("reader", "read")
    assert httpx.get(path, timeout=30,  # a key that may read is not enough: 403
                     headers={"Authorization": f"Bearer {reader}"}).status_code == 403

    admin = {"Authorization": f"Bearer {KEY_A}"}
    r = httpx.get(path, timeout=30, headers=admin)
    assert r.status_code == 200
    assert r.headers["X-Kinject-Sha256"] == v0
    assert int(r.headers["Content-Length"]) == len(r.content)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert sorted(tar.getnames()) == sorted([WEIGHTS, "adapter_config.json",
                                                 "manifest.json"])
        data = tar.extractfile(WEIGHTS)
        assert data is not None and data.read() == (reg_a.path(v0) / WEIGHTS).read_bytes()
    for wrong in ("f" * 64, "..%2F..%2Fapi_keys.json", "..", "%2Fetc%2Fpasswd"):
        assert httpx.get(f"{a}/v1/adapters/{wrong}/archive", timeout=30,
                         headers=admin).status_code == 404, wrong
