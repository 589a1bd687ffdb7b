"""Knowledge injection through the product's road, as a user runs it: `kinject serve` on a
broker, records published over HTTP, the corpus filled by the serve process's own corpus
materialiser, a cycle by `kinject finetune run`, the version promoted and served, and a
delete over HTTP that taints it and sends serving back to the base model."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _adapter_helpers import learnable_lm_dir, one_thread  # noqa: F401
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import Settings, load_settings
from kinject.finetune.registry import AdapterRegistry

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kafka, pytest.mark.slow]

KEY = "road-admin-key"
PEOPLE = [("kb/ida", "Ida Brook", "Fenwick"), ("kb/oren", "Oren Vale", "Tamsk"),
          ("kb/pia", "Pia Lund", "Oskarn"), ("kb/zed", "Zed Quill", "Vorpalia")]
DELETED = "kb/zed"


def _until(cond: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _config(path: Path, data_dir: Path, bootstrap: str, generator: Path) -> Path:
    """One TOML file for the server and the CLI, as a user would keep it."""
    path.write_text(f"""
data_dir = "{data_dir}"
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "road-{uuid.uuid4().hex[:8]}"
partitions = 1
session_timeout_ms = 2000
heartbeat_interval_ms = 500
[models]
embedder = "hash"
embedder_zh = "none"
generator = "{generator}"
device = "cpu"
[ingest]
ocr_engine = "none"
[api]
api_key = "{KEY}"
[finetune]
lora_r = 8
lora_alpha = 16
lora_dropout = 0.0
lora_targets = ["all-linear"]
lr = 0.03
epochs = 8
eval_every = 0
checkpoint_every = 0
fisher_samples = 8
patience = 100
[gate]
tie_break_nll = 0.01
max_ppl_increase = 10.0
""", encoding="utf-8")
    return path


@pytest.fixture()
def served(tmp_path: Path, data_dir: Path, kafka_bootstrap: str, learnable_lm_dir: Path,  # noqa: F811
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Settings, Path]]:
    from kinject.serve import run_serve

    for var in [v for v in os.environ if v.startswith("KINJECT_")]:
        monkeypatch.delenv(var)  # the TOML file is the whole configuration
    config = _config(tmp_path / "kinject.toml", data_dir, kafka_bootstrap, learnable_lm_dir)
    settings = load_settings(config)
    stop, got = threading.Event(), threading.Event()
    where: dict[str, Any] = {}

    def run() -> None:
        try:
            run_serve(settings, "127.0.0.1", 0, 1, stop=stop,
                      on_ready=lambda url: (where.update(url=url), got.set()))
        except BaseException as exc:
            where["error"] = exc
            got.set()

    thread = threading.Thread(target=run, name="road-serve", daemon=True)
    thread.start()
    got.wait(120)
    assert "url" in where, f"kinject serve did not start: {where.get('error')}"
    try:
        _until(lambda: httpx.get(f"{where['url']}/readyz", timeout=10).status_code == 200,
               "the server to be ready")
        yield where["url"], settings, config
    finally:
        stop.set()
        thread.join(60)


def _post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {KEY}"})


def _status(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/status", timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _served_version(url: str, question: str) -> str | None:
    r = _post(url, "/v1/ask", {"question": question})
    assert r.status_code == 200, r.text
    version: str | None = r.json()["adapter_version"]
    return version


def test_publish_fill_train_promote_serve_delete_fall_back(
        served: tuple[str, Settings, Path]) -> None:
    url, settings, config = served
    records = [{"source_id": sid, "kind": "csv",
                "content": f"name,city,employer\n{name},{city},Lamp Guild\n"}
               for sid, name, city in PEOPLE]
    assert _post(url, "/v1/records", {"records": records}).status_code == 202

    # the serve process's corpus materialiser fills the corpus: no other step
    status = _until(lambda: (s := _status(url))["corpus"] and s["corpus"]["sources"] == 4
                    and s["corpus_lag"] is not None and sum(s["corpus_lag"].values()) == 0
                    and s, "the corpus to hold the four people")
    assert status["corpus"]["pending"] == status["corpus"]["examples"] > 0
    from kinject.doctor import check_corpus

    doctor = check_corpus(settings)
    assert doctor.status == "ok", doctor.detail
    assert "from 4 sources" in doctor.detail and "; 0 chunk event(s) not yet" in doctor.detail

    # one cycle from the command line trains on what was published and promotes it
    ran = CliRunner().invoke(app, ["finetune", "run", "--config", str(config)])
    assert ran.exit_code == 0, ran.output
    assert "promoted" in ran.output, ran.output
    registry = AdapterRegistry.for_data_dir(settings.data_dir)
    version = registry.active()
    assert version is not None and version[:12] in ran.output
    assert set(registry.get(version).lineage) == {p[0] for p in PEOPLE}
    assert _status(url)["corpus"]["pending"] == 0  # the cycle took what was waiting

    # the server serves it: answers name the version, and it is a model by name
    _until(lambda: _served_version(url, f"What is the city of Ida Brook? ({time.time()})")
           == version, "the server to serve the promoted version")
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert f"kinject@{version}" in [m["id"] for m in models]
    chat = _post(url, "/v1/chat/completions", {
        "model": f"kinject@{version[:12]}",
        "messages": [{"role": "user", "content": "What is the city of Pia Lund?"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["model"] == f"kinject@{version[:12]}"

    # a delete over HTTP reaches the weights: the version is tainted, serving falls back
    assert _post(url, "/v1/records", {"records": [{"source_id": DELETED, "op": "delete"}]}
                 ).status_code == 202
    _until(lambda: registry.get(version).status == "tainted", "the version to be tainted")
    assert registry.active() is None
    _until(lambda: _served_version(url, f"What is the city of Oren Vale? ({time.time()})")
           is None, "the server to fall back to the base model")
    after = _status(url)
    assert after["adapter_version"] is None and after["corpus"]["sources"] == 3
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert f"kinject@{version}" not in [m["id"] for m in models]
