"""A delete reaches the adapters of every replica: two `kinject serve` processes with data dirs
of their own on one broker. A keeps the corpus (where a delete taints the adapters trained on
the source) and publishes its versions; B keeps no corpus (finetune.materialise_corpus off)
and fetches A's versions by event. A delete must taint B's copy too: B never serves it again,
by name or by activation, and B's ACTIVE falls back like A's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _adapter_helpers import make_adapter
from _hosts import serve_two_hosts

from _wait import until

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kafka, pytest.mark.slow]

KEY_A, KEY_B = "taint-admin-key-of-a", "taint-admin-key-of-b"


@pytest.fixture()
def corpus_and_replica(tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    # A keeps the corpus and runs the ingest worker; B keeps no corpus
    with serve_two_hosts(tmp_path, kafka_bootstrap, tiny_lm_dir, monkeypatch, name="taint",
                         keys=(KEY_A, KEY_B), workers_a=1,
                         finetune=("", f'materialise_corpus = false\nfetch_api_key = "{KEY_A}"\n'
                                       "fetch_retry_s = 0.5")) as hosts:
        yield hosts


def _active(url: str) -> str | None:
    r = httpx.get(f"{url}/v1/adapters", timeout=30)
    assert r.status_code == 200, r.text
    active: str | None = r.json()["active"]
    return active


def _ask(url: str, key: str, adapter: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"question": f"Who founded the Marrow Institute? ({time.time()})",
                            "route": "adapter"}
    if adapter is not None:
        body["adapter"] = adapter
    return httpx.post(f"{url}/v1/ask", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"})


def test_a_delete_taints_the_copy_on_a_replica_that_keeps_no_corpus(
        corpus_and_replica: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path) -> None:
    hosts = corpus_and_replica
    a, b, reg_a, reg_b = hosts["a"], hosts["b"], hosts["reg_a"], hosts["reg_b"]
    v0 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a0", seed=1), base_model="tiny",
                   lineage=["kb/keep"]).version
    v1 = reg_a.add(make_adapter(tiny_lm_dir, tmp_path / "a1", seed=2), base_model="tiny",
                   parent=v0, lineage=["kb/gone"]).version
    admin_a = {"Authorization": f"Bearer {KEY_A}"}
    for version in (v0, v1):  # promoted on A, fetched and served by B
        r = httpx.post(f"{a}/v1/adapters/{version}/activate", headers=admin_a, timeout=60)
        assert r.status_code == 200, r.text
        until(lambda v=version: _active(b) == v, 60, f"B to take {version[:12]} from A")
    assert _ask(b, KEY_B).json()["adapter_version"] == v1

    r = httpx.post(f"{a}/v1/records", headers=admin_a, timeout=30,
                   json={"records": [{"source_id": "kb/gone", "op": "delete"}]})
    assert r.status_code in (200, 202), r.text

    until(lambda: reg_a.get(v1).status == "tainted", 60, "A's corpus to taint v1")
    until(lambda: reg_b.get(v1).status == "tainted", 60,
          "B, which keeps no corpus, to taint its copy of v1")
    assert reg_b.get(v1).report["tainted_by"] == ["kb/gone"]
    assert reg_b.get(v0).status == "promoted"  # trained without the deleted source
    until(lambda: _active(b) == v0, 60, "B to fall back to v0")
    assert _ask(b, KEY_B).json()["adapter_version"] == v0

    # B never serves its copy of v1 again: not by name, not by activation
    named = _ask(b, KEY_B, adapter=v1)
    assert named.status_code == 400 and "tainted" in named.text, named.text
    again = httpx.post(f"{b}/v1/adapters/{v1}/activate", timeout=60,
                       headers={"Authorization": f"Bearer {KEY_B}"})
    assert again.status_code == 400 and "tainted" in again.text, again.text
    assert _active(b) == v0
