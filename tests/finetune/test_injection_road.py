"""Knowledge injection through the product's road, as a user runs it: `kinject serve` on a
broker, records published over HTTP, the corpus filled by the serve process's own corpus
materialiser, a cycle by `kinject finetune run` (or, with no command line at all, by
POST /v1/finetune/jobs), the version promoted and served (by name on the OpenAI-compatible
chat route too), and a delete over HTTP that taints it and sends serving back to the base
model."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _adapter_helpers import learnable_lm_dir  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from _serve import start_serve, wait_ready
from _wait import until
from kinject.cli import app
from kinject.config import Settings, load_settings
from kinject.finetune.registry import AdapterRegistry

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kafka, pytest.mark.slow]

KEY = "road-admin-key"
PEOPLE = [("kb/ida", "Ida Brook", "Fenwick"), ("kb/oren", "Oren Vale", "Tamsk"),
          ("kb/pia", "Pia Lund", "Oskarn"), ("kb/zed", "Zed Quill", "Vorpalia")]
DELETED = "kb/zed"


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
    for var in [v for v in os.environ if v.startswith("KINJECT_")]:
        monkeypatch.delenv(var)  # the TOML file is the whole configuration
    config = _config(tmp_path / "kinject.toml", data_dir, kafka_bootstrap, learnable_lm_dir)
    settings = load_settings(config)
    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url, 90)
        yield url, settings, config
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


def _publish_people(url: str) -> dict[str, Any]:
    """POST the four people as CSV records; /v1/status once the serve process's corpus
    materialiser holds all four and has committed every chunk event."""
    records = [{"source_id": sid, "kind": "csv",
                "content": f"name,city,employer\n{name},{city},Lamp Guild\n"}
               for sid, name, city in PEOPLE]
    assert _post(url, "/v1/records", {"records": records}).status_code == 202
    status: dict[str, Any] = until(
        lambda: (s := _status(url))["corpus"] and s["corpus"]["sources"] == 4
        and s["corpus_lag"] is not None and sum(s["corpus_lag"].values()) == 0 and s,
        90, "the corpus to hold the four people")
    return status


def _served_version(url: str, question: str) -> str | None:
    r = _post(url, "/v1/ask", {"question": question})
    assert r.status_code == 200, r.text
    version: str | None = r.json()["adapter_version"]
    return version


def test_publish_fill_train_promote_serve_delete_fall_back(
        served: tuple[str, Settings, Path]) -> None:
    url, settings, config = served
    # the serve process's corpus materialiser fills the corpus: no other step
    status = _publish_people(url)
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
    until(lambda: _served_version(url, f"What is the city of Ida Brook? ({time.time()})")
          == version, 90, "the server to serve the promoted version")
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
    # the registry moves ACTIVE before it marks the version tainted: no reader sees both
    until(lambda: registry.get(version).status == "tainted", 90, "the version to be tainted")
    assert registry.active() is None
    until(lambda: _served_version(url, f"What is the city of Oren Vale? ({time.time()})")
          is None, 90, "the server to fall back to the base model")
    after = _status(url)
    assert after["adapter_version"] is None and after["corpus"]["sources"] == 3
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert f"kinject@{version}" not in [m["id"] for m in models]


def _admin(url: str, path: str) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=60, headers={"Authorization": f"Bearer {KEY}"})


def _get(url: str, path: str) -> dict[str, Any]:
    r = httpx.get(f"{url}{path}", timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _chat(url: str, model: str, question: str, **extra: Any) -> httpx.Response:
    return _post(url, "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": question}], **extra})


def test_the_whole_cycle_over_http_job_promotion_named_model_and_delete(
        served: tuple[str, Settings, Path]) -> None:
    """The same road with no command line at all: what an operator does with curl."""
    url, _, _ = served
    _publish_people(url)
    assert _get(url, "/v1/adapters") == {"active": None, "adapters": []}

    # a cycle through the API: 202 with where to follow it, polled to a final state
    started = _admin(url, "/v1/finetune/jobs")
    assert started.status_code == 202, started.text
    job_url = started.headers["location"]
    assert job_url == f"/v1/finetune/jobs/{started.json()['id']}"
    seen: set[str] = set()

    def final() -> dict[str, Any] | None:
        job = _get(url, job_url)
        seen.add(job["stage"])
        return job if job["status"] not in ("queued", "running") else None

    job = until(final, 300, "the fine-tuning job to finish")
    assert job["status"] == "succeeded", job["error"]
    assert job["outcome"] == "promoted" and job["report"]["promote"] is True, job["report"]
    assert job["progress"] == 1.0 and job["train_examples"] > 0 and "training" in seen
    version = job["version"]
    assert [j["id"] for j in _get(url, "/v1/finetune/jobs")["jobs"]] == [job["id"]]

    # promoted: GET /v1/adapters shows it serving, learnt from exactly what was published
    adapters = _get(url, "/v1/adapters")
    assert adapters["active"] == version
    [listed] = adapters["adapters"]
    assert listed["version"] == version and listed["status"] == "promoted" and listed["active"]
    shown = httpx.get(f"{url}/v1/adapters/{version[:12]}", timeout=60,  # lineage: admin only
                      headers={"Authorization": f"Bearer {KEY}"}).json()
    assert shown["version"] == version and set(shown["lineage"]) == {p[0] for p in PEOPLE}

    # every request now answers with it (the serving replica swapped it in without a restart)
    until(lambda: _served_version(url, f"What is the city of Ida Brook? ({time.time()})")
          == version, 90, "the server to serve the promoted version")

    # kinject@<version> on /v1/chat/completions answers from that adapter's weights: closed
    # book, with what was published (the base model never saw "Lamp Guild"), the same text
    # /v1/ask gives naming that version
    question = "What is the employer of Pia Lund?"
    named = _chat(url, f"kinject@{version[:12]}", question, route="adapter")
    assert named.status_code == 200, named.text
    body = named.json()
    assert body["model"] == f"kinject@{version[:12]}" and body["citations"] == []
    text = body["choices"][0]["message"]["content"]
    assert "Lamp Guild" in text, text
    asked = _post(url, "/v1/ask", {"question": question, "route": "adapter",
                                   "adapter": version[:12]}).json()
    assert asked["adapter_version"] == version and asked["text"] == text
    base = _chat(url, "kinject-base", question, route="adapter").json()
    assert "Lamp Guild" not in base["choices"][0]["message"]["content"]

    # a delete over HTTP taints the version: it stops serving, by default and by name
    assert _post(url, "/v1/records", {"records": [{"source_id": DELETED, "op": "delete"}]}
                 ).status_code == 202
    until(lambda: _get(url, "/v1/adapters")["active"] is None,
          90, "the delete to take the version out of service")
    [tainted] = _get(url, "/v1/adapters")["adapters"]
    assert tainted["version"] == version and tainted["status"] == "tainted"
    assert not tainted["active"]
    until(lambda: _served_version(url, f"What is the city of Oren Vale? ({time.time()})")
          is None, 90, "the server to fall back to the base model")
    # the question it answered before is refused now, not served from a cache
    for refused in (_chat(url, f"kinject@{version[:12]}", question, route="adapter"),
                    _post(url, "/v1/ask", {"question": question, "route": "adapter",
                                           "adapter": version[:12]})):
        assert refused.status_code == 400 and "tainted" in refused.text, refused.text
    assert f"kinject@{version}" not in [m["id"] for m in _get(url, "/v1/models")["data"]]
    assert _status(url)["corpus"]["sources"] == 3
