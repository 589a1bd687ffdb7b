"""Adapters and fine-tuning jobs over HTTP, and closed-book answers through every front door:
a real KinjectService on a real registry in a temp dir, the tiny model, no broker."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kinject.api.app import create_app
from kinject.api.auth import KEYS_FILE, KeyStore
from kinject.config import Settings, load_settings
from kinject.errors import NotFound
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.jobs import corpus_path
from kinject.finetune.registry import AdapterRegistry
from kinject.index.changes import SourceUpdate
from kinject.rag.service import ABSTAIN_TEXT
from kinject.service import KinjectService
from kinject.types import Chunk, content_hash

GUILD = "The weather was fine. The guild was founded in 1847 by Ada Quill."
ON_TOPIC = "who founded the guild"
OFF_TOPIC = "quarterly tax filing rules"

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Env:
    root: Path
    settings: Settings
    svc: KinjectService
    client: TestClient
    keys: dict[str, str]
    registry: AdapterRegistry

    def as_(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"} if role else {}


@pytest.fixture()
def env(tmp_path: Path, tiny_lm_dir: Path) -> Iterator[Env]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        models={"embedder": "hash", "generator": str(tiny_lm_dir), "device": "cpu"},
        # a cycle the tiny model runs in seconds; the gate's bounds as in tests/finetune
        finetune={"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lr": 5e-3,
                  "epochs": 2, "batch_size": 8, "eval_every": 0, "checkpoint_every": 0,
                  "fisher_samples": 8, "patience": 10},
        gate={"tie_break_nll": 0.01, "max_ppl_increase": 10.0, "max_questions": 16},
    )
    store = KeyStore(settings.data_dir / KEYS_FILE)
    keys = {role: store.create(f"test-{role}", role)[1] for role in ("read", "write", "admin")}
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        yield Env(tmp_path, settings, svc, client, keys,
                  AdapterRegistry.for_data_dir(settings.data_dir))


def make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A real PEFT LoRA folder for the tiny model, with random B so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.save_pretrained(str(out))
    return out


def register(env: Env, tiny_lm_dir: Path, seed: int, sources: list[str],
             parent: str | None = None) -> str:
    folder = make_adapter(tiny_lm_dir, env.root / f"adapter-{seed}", seed)
    return env.registry.add(folder, base_model=str(tiny_lm_dir), lineage=sources,
                            parent=parent).version


def index_text(svc: KinjectService, source_id: str, text: str) -> None:
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                  source_id=source_id, text=text)
    svc.index.apply([SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                                  vectors=svc.index.embedder.encode([text]),
                                  embedder=svc.index.embedder.name)])


def error_code(r: Any) -> str:
    code: str = r.json()["error"]["code"]
    return code


# -- adapters ----------------------------------------------------------------------------------
def test_list_show_activate_rollback_round_trip_needs_an_admin_key(env: Env,
                                                                   tiny_lm_dir: Path) -> None:
    c = env.client
    v1 = register(env, tiny_lm_dir, 1, ["kb/a"])
    time.sleep(0.01)  # listed oldest first, by creation time
    v2 = register(env, tiny_lm_dir, 2, ["kb/b"], parent=v1)

    listed = c.get("/v1/adapters").json()  # reads are open by default
    assert listed["active"] is None
    assert [a["version"] for a in listed["adapters"]] == [v1, v2]
    assert [a["sources"] for a in listed["adapters"]] == [1, 2]  # v2 inherits v1's lineage
    assert not any(a["active"] for a in listed["adapters"])

    activate = f"/v1/adapters/{v1[:12]}/activate"
    for role, status, code in ((None, 401, "unauthorized"), ("read", 403, "forbidden"),
                               ("write", 403, "forbidden")):
        r = c.post(activate, headers=env.as_(role))
        assert r.status_code == status and error_code(r) == code, r.text
        r = c.post("/v1/adapters/rollback", headers=env.as_(role))
        assert r.status_code == status and error_code(r) == code, r.text
    assert env.registry.active() is None  # refused calls changed nothing

    r = c.post(activate, headers=env.as_("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == v1 and r.json()["previous"] is None
    assert c.get("/v1/adapters").json()["active"] == v1
    shown = c.get(f"/v1/adapters/{v1[:12]}").json()
    assert shown["version"] == v1 and shown["active"] is True and shown["status"] == "promoted"
    assert shown["ancestors"] == [] and shown["sources"] == 1
    # what it was trained on (source ids, deleted ones included once tainted) and its
    # training config (paths) are for admin keys; readers get how many sources
    for role in (None, "read", "write"):
        seen = c.get(f"/v1/adapters/{v1[:12]}", headers=env.as_(role)).json()
        assert seen["lineage"] is None and seen["train_config"] is None, role
        assert seen["sources"] == 1
    full = c.get(f"/v1/adapters/{v1[:12]}", headers=env.as_("admin")).json()
    assert full["lineage"] == ["kb/a"] and isinstance(full["train_config"], dict)
    assert c.get(f"/v1/adapters/{v2}").json()["ancestors"] == [v1]
    # what serves follows at once: a closed-book answer names the version
    answer = c.post("/v1/ask", json={"question": OFF_TOPIC, "route": "adapter"}).json()
    assert answer["adapter_version"] == v1

    admin = env.as_("admin")
    assert c.post(f"/v1/adapters/{v2}/activate", headers=admin).json()["previous"] == v1
    back = c.post("/v1/adapters/rollback", headers=admin).json()
    assert back["version"] == v1 and back["previous"] == v2 and back["reason"] == "rollback"
    assert c.post("/v1/adapters/rollback", headers=admin).json()["version"] is None
    assert c.get("/v1/adapters").json()["active"] is None
    assert c.post("/v1/ask", json={"question": OFF_TOPIC, "route": "adapter"}
                  ).json()["adapter_version"] is None

    # unknown versions are 404s; a tainted one is refused and nothing changes
    for r in (c.get("/v1/adapters/0123456789ab"),
              c.post("/v1/adapters/0123456789ab/activate", headers=admin)):
        assert r.status_code == 404 and error_code(r) == "not_found", r.text
    assert c.post(f"/v1/adapters/{v1}/activate", headers=admin).status_code == 200
    env.registry.taint_source("kb/b")
    refused = c.post(f"/v1/adapters/{v2}/activate", headers=admin)
    assert refused.status_code == 400 and "tainted" in refused.json()["error"]["message"]
    assert env.registry.active() == v1
    assert c.post("/v1/adapters/base/activate", headers=admin).json()["version"] is None


# -- closed-book answers -----------------------------------------------------------------------
def test_closed_book_answers_through_every_front_door(env: Env, tiny_lm_dir: Path) -> None:
    c = env.client
    v1 = register(env, tiny_lm_dir, 1, ["kb/guild"])
    assert c.post(f"/v1/adapters/{v1}/activate", headers=env.as_("admin")).status_code == 200
    index_text(env.svc, "kb/guild", GUILD)

    # /v1/ask route=adapter: closed book from the serving adapter, nothing retrieved
    closed = c.post("/v1/ask", json={"question": ON_TOPIC, "route": "adapter"}).json()
    assert closed["route"] == "adapter" and closed["adapter_version"] == v1
    assert closed["citations"] == [] and not closed["abstained"] and closed["text"].strip()
    base = c.post("/v1/ask", json={"question": ON_TOPIC, "route": "adapter",
                                   "adapter": "base"}).json()
    assert base["adapter_version"] is None and base["text"] != closed["text"]

    # route=both: the passages read with the adapter; closed book when none is relevant
    both = c.post("/v1/ask", json={"question": ON_TOPIC, "route": "both"}).json()
    assert both["route"] == "both" and both["adapter_version"] == v1
    assert [x["source_id"] for x in both["citations"]] == ["kb/guild"]
    off = c.post("/v1/ask", json={"question": OFF_TOPIC, "route": "both"}).json()
    assert off["route"] == "adapter" and not off["abstained"] and off["citations"] == []
    rag = c.post("/v1/ask", json={"question": OFF_TOPIC, "route": "rag"}).json()
    assert rag["abstained"] and rag["text"] == ABSTAIN_TEXT  # what the adapter spares

    # streamed, the same closed-book answer arrives
    with c.stream("POST", "/v1/ask", json={"question": ON_TOPIC, "route": "adapter",
                                           "stream": True}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    final = [json.loads(e) for e in events if e != "[DONE]" and '"answer"' in e][-1]
    assert final["route"] == "adapter" and final["text"] == closed["text"]

    # /v1/chat/completions: kinject@<version> answers closed book where nothing is relevant
    def chat(model: str, question: str, **extra: Any) -> Any:
        r = c.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": question}], **extra})
        assert r.status_code == 200, r.text
        return r.json()

    named = chat(f"kinject@{v1[:12]}", OFF_TOPIC)
    alone = c.post("/v1/ask", json={"question": OFF_TOPIC, "route": "adapter",
                                    "adapter": v1}).json()
    assert named["choices"][0]["message"]["content"] == alone["text"] != ABSTAIN_TEXT
    assert named["citations"] == [] and named["model"] == f"kinject@{v1[:12]}"
    assert chat("kinject", OFF_TOPIC)["choices"][0]["message"]["content"] == ABSTAIN_TEXT
    grounded = chat(f"kinject@{v1}", ON_TOPIC)
    assert [x["source_id"] for x in grounded["citations"]] == ["kb/guild"]
    assert chat(f"kinject@{v1}", ON_TOPIC, route="adapter")["citations"] == []
    with c.stream("POST", "/v1/chat/completions", json={
            "model": f"kinject@{v1}", "stream": True,
            "messages": [{"role": "user", "content": OFF_TOPIC}]}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    streamed = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks)
    assert streamed == alone["text"]


# -- names that try to leave the registry ------------------------------------------------------
@pytest.fixture()
def opened_outside(env: Env) -> Iterator[list[str]]:
    """Every file or folder the process opens or lists under ``env.root / "evil"`` (an audit
    hook: it sees the reads that the code under test makes, whatever function makes them)."""
    evil = str(env.root / "evil")
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event in ("open", "os.listdir", "os.scandir") and args:
            path = args[0]
            if isinstance(path, str | bytes | Path) and "evil" in str(path) and (
                    os.path.abspath(str(path)).startswith(evil)):
                seen.append(str(path))

    sys.addaudithook(hook)  # hooks cannot be removed: this one is switched off instead
    try:
        yield seen
    finally:
        active[0] = False


def test_adapter_names_never_escape_the_registry(env: Env, tiny_lm_dir: Path,
                                                 opened_outside: list[str]) -> None:
    c = env.client
    v1 = register(env, tiny_lm_dir, 1, ["kb/guild"])
    # A complete, valid adapter folder outside the registry, where `../../../evil` from the
    # registry's versions/ folder and an absolute path both lead.
    evil = env.root / "evil"
    shutil.copytree(env.registry.path(v1), evil)
    assert (env.registry.versions_dir / "../../../evil/manifest.json").resolve() == (
        evil / "manifest.json").resolve()
    opened_outside.clear()  # the copy above; from here on nothing may touch it
    names = ["../../../evil", str(evil), "../../../evil/", "./../../../evil", "..", "."]

    for name in names:
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json={
                "model": f"kinject@{name}", "stream": stream,
                "messages": [{"role": "user", "content": ON_TOPIC}]})
            assert r.status_code == 404 and error_code(r) == "not_found", (name, r.text)
            # nor does the answer show where the data lives
            assert str(env.settings.data_dir) not in r.text
        r = c.post("/v1/ask", json={"question": ON_TOPIC, "adapter": name})
        assert r.status_code == 404 and error_code(r) == "not_found", (name, r.text)
        with pytest.raises(NotFound):
            env.registry.resolve(name)
    for path in ("/v1/adapters/..%2F..%2F..%2Fevil", "/v1/adapters/%2E%2E",
                 "/v1/adapters/..%2F..%2F..%2Fevil/activate"):
        r = (c.post(path, headers=env.as_("admin")) if path.endswith("activate")
             else c.get(path))
        assert r.status_code == 404 and error_code(r) == "not_found", (path, r.text)
    assert opened_outside == []
    assert env.registry.active() is None
    # the version itself still answers by its own name
    ok = c.post("/v1/chat/completions", json={
        "model": f"kinject@{v1[:12]}", "messages": [{"role": "user", "content": ON_TOPIC}]})
    assert ok.status_code == 200


# -- fine-tuning jobs --------------------------------------------------------------------------
PEOPLE = [("kb/ida", "Ida Brook", "Fenwick", "Harbour Board"),
          ("kb/oren", "Oren Vale", "Tamsk", "Glass Works")]


def add_people(data_dir: Path) -> None:
    chunks = []
    for source_id, name, city, employer in PEOPLE:
        text = f"name: {name}\ncity: {city}\nemployer: {employer}"
        chunks.append(Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                            source_id=source_id, text=text, kind="csv"))
    with CorpusStore(corpus_path(data_dir)) as corpus:
        corpus.add_chunks(chunks)


def wait_final(c: TestClient, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/finetune/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s} s")


@pytest.mark.slow
def test_a_job_submitted_over_http_trains_gates_and_reports(env: Env) -> None:
    c = env.client
    add_people(env.settings.data_dir)
    for role, status in ((None, 401), ("read", 403), ("write", 403)):
        assert c.post("/v1/finetune/jobs", headers=env.as_(role)).status_code == status
    assert c.get("/v1/finetune/jobs").json()["jobs"] == []

    admin = env.as_("admin")
    r = c.post("/v1/finetune/jobs", headers=admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and r.headers["location"] == (
        f"/v1/finetune/jobs/{job['id']}")
    busy = c.post("/v1/finetune/jobs", headers=admin)  # one cycle at a time
    assert busy.status_code == 409 and error_code(busy) == "conflict", busy.text

    done = wait_final(c, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["stage"] == done["outcome"]
    assert done["outcome"] in ("promoted", "rejected") and done["version"]
    report = done["report"]
    assert isinstance(report["promote"], bool) and report["reasons"]
    assert report["candidate"]["n_new"] > 0 and done["train_examples"] > 0
    assert "new_accuracy" in done["metrics"] and "tokens_per_s" in done["metrics"]
    assert [j["id"] for j in c.get("/v1/finetune/jobs").json()["jobs"]] == [job["id"]]
    missing = c.get("/v1/finetune/jobs/no-such-job")
    assert missing.status_code == 404 and error_code(missing) == "not_found"

    # the registry holds what the job reported, and the gate's decision stands
    version = c.get(f"/v1/adapters/{done['version']}", headers=admin).json()
    assert version["status"] == done["outcome"] and version["report"]["promote"] == (
        report["promote"])
    assert set(version["lineage"]) == {p[0] for p in PEOPLE}
    active = c.get("/v1/adapters").json()["active"]
    assert active == (done["version"] if done["outcome"] == "promoted" else None)

    # the trained version answers closed book by its name, whatever the gate decided
    r = c.post("/v1/chat/completions", json={
        "model": f"kinject@{done['version']}",
        "messages": [{"role": "user", "content": "Which city is recorded for Ida Brook?"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] not in ("", ABSTAIN_TEXT)

    # the lock went with the job: the next one starts, and finds nothing new to train on
    again = c.post("/v1/finetune/jobs", headers=admin)
    assert again.status_code == 202, again.text
    skipped = wait_final(c, again.json()["id"])
    assert skipped["status"] == "skipped" and skipped["outcome"] == "skipped"


# -- the web page ------------------------------------------------------------------------------
def test_recent_ingests_show_a_source_published_again_once(env: Env) -> None:
    index_text(env.svc, "kb/twice", "The guild hall has one door.")
    index_text(env.svc, "kb/other", "The harbour has two piers.")
    index_text(env.svc, "kb/twice", "The guild hall has one door and a bell tower.")
    index_text(env.svc, "kb/gone", "Nothing lasts.")
    env.svc.index.apply([SourceUpdate(op="delete", source_id="kb/gone")])
    recent = env.client.get("/v1/status", params={"recent": 3}).json()["recent"]
    # newest first, each source once with its latest update: 3 sources, not 3 updates
    assert [(r["source_id"], r["op"]) for r in recent] == [
        ("kb/gone", "delete"), ("kb/twice", "upsert"), ("kb/other", "upsert")]


@pytest.mark.browser
def test_page_shows_the_serving_adapter_and_the_last_jobs_as_text(
        env: Env, tiny_lm_dir: Path, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from kinject.finetune.jobs import JobStore
    from kinject.serve import ApiServer

    c, admin = env.client, env.as_("admin")
    job = c.post("/v1/finetune/jobs", headers=admin).json()  # nothing to train: skipped
    assert wait_final(c, job["id"])["status"] == "skipped"
    v1 = register(env, tiny_lm_dir, 1, ["kb/a"])
    assert c.post(f"/v1/adapters/{v1}/activate", headers=admin).status_code == 200
    # A job whose text is markup must be shown as that text, never parsed into the page.
    store = JobStore.for_data_dir(env.settings.data_dir)
    hostile = store.create()
    store.update(hostile.id, status="failed", stage='<b id="pwned">bold</b>', pid=None)
    store.close()
    add_people(env.settings.data_dir)  # the corpus the next cycle would train on
    corpus = c.get("/v1/status").json()["corpus"]
    index_text(env.svc, "kb/again", "The guild was founded in 1847.")
    index_text(env.svc, "kb/again", "The guild was founded in 1847 by Ada Quill.")
    assert corpus["sources"] == 2 and corpus["pending"] == corpus["examples"] > 0

    with ApiServer(create_app(env.svc)) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "adapter-active").text == v1[:12])
        wait.until(lambda d: job["id"] in d.find_element(By.ID, "jobs").text)
        wait.until(lambda d: d.find_element(By.ID, "stat-corpus").text not in ("", "-"))
        wait.until(lambda d: "kb/again" in d.find_element(By.ID, "recent").text)
        recent = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#recent tr")]
        shown_corpus = browser.find_element(By.ID, "stat-corpus").text
        shown_lag = browser.find_element(By.ID, "stat-corpus-lag").text
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#jobs tr")]
        adapters = browser.find_element(By.ID, "adapters").text
        pwned = browser.find_elements(By.ID, "pwned")
    assert len(rows) == 2 and hostile.id in rows[0] and job["id"] in rows[1]
    assert '<b id="pwned">bold</b>' in rows[0] and pwned == []
    assert "skipped" in rows[1] and "100%" in rows[1]
    assert f"{v1[:12]} (serving)" in adapters and "promoted" in adapters
    n = corpus["examples"]
    # what the numbers are, in words a new user reads: "23,533 examples" with its comma
    assert shown_corpus == (f"{n:,} examples from 2 sources, {n:,} waiting for the next "
                            "fine-tuning cycle")
    assert shown_lag == "?"  # no broker attached: the lag is unknown, not zero
    assert len([r for r in recent if "kb/again" in r]) == 1  # published twice, shown once


@pytest.mark.browser
def test_page_says_when_there_is_no_adapter_or_job_yet(env: Env, browser) -> None:  # type: ignore[no-untyped-def]
    # A new user's page before any cycle: words, not an empty table under its headers.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from kinject.serve import ApiServer

    with ApiServer(create_app(env.svc)) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "adapters").text != "")
        wait.until(lambda d: d.find_element(By.ID, "jobs").text != "")
        adapters = browser.find_element(By.ID, "adapters").text
        jobs = browser.find_element(By.ID, "jobs").text
    assert "none yet" in adapters
    assert "no fine-tuning job yet" in jobs
