"""`kinject serve` and `kinject keys` from the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kinject.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--name", "ci", "--role", "write",
                               "--data-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("kj_")
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert "ci" in listed.stdout and "write" in listed.stdout and key not in listed.stdout
    assert key not in (tmp_path / "api_keys.json").read_text()
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--role", "root",
                              "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2
    gone = runner.invoke(app, ["keys", "revoke", "ci", "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0 and "revoked 1" in gone.stdout
    again = runner.invoke(app, ["keys", "revoke", "ci", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1


def test_compose_api_command_is_a_real_serve_command() -> None:
    import typer.main

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    argv = compose["services"]["api"]["command"]
    group = typer.main.get_command(app)
    command = group.get_command(None, argv[0])  # type: ignore[attr-defined, arg-type]
    assert command is not None
    ctx = command.make_context(argv[0], list(argv[1:]))
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["workers"] == 0


@contextmanager
def _serve(env: dict[str, str], tmp_path: Path, workers: int = 0
           ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A `kinject serve` process (a read replica on a free port; stderr in
    ``tmp_path/stderr.log``) and its URL; killed at the end if the test did not stop it."""
    with (tmp_path / "stderr.log").open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "kinject", "serve", "--port", "0",
                                 "--workers", str(workers)], env=env, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("kinject serving on http://127.0.0.1:"), line
            yield proc, line.split()[-1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.kafka
@pytest.mark.slow
def test_serve_runs_a_read_replica_and_stops_on_sigterm(tmp_path: Path, kafka_bootstrap: str,
                                                       tiny_lm_dir: Path) -> None:
    """... keeps its data private (dir 0700, files 0600) and dumps its threads' stacks on
    SIGUSR1 instead of dying."""
    data = tmp_path / "data"
    env = {**os.environ, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": "api-cli", "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_DATA_DIR": str(data)}
    with _serve(env, tmp_path) as (proc, url):
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.3)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}

        modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
                 for p in [data, *data.rglob("*")]}
        assert {"data/index/docstore.sqlite", "data/outbox.sqlite3"} <= set(modes), modes
        assert {m for p, m in modes.items() if (tmp_path / p).is_dir()} == {0o700}, modes
        assert {m for p, m in modes.items() if (tmp_path / p).is_file()} == {0o600}, modes

        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        assert proc.poll() is None, "SIGUSR1 killed kinject serve"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert "most recent call first" in (tmp_path / "stderr.log").read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.kafka
@pytest.mark.slow
def test_serve_with_its_embedded_broker_stops_on_sigterm_without_errors(
        tmp_path: Path, tiny_lm_dir: Path) -> None:
    """With no bootstrap servers, serve runs Tansu itself. SIGTERM, whether it comes while the
    models still load (the ingest worker was then connecting after the broker had stopped,
    and the warm-up died in a traceback as the interpreter ended) or once records flow, closes
    every Kafka client before that broker stops: the log holds no ERROR line, no traceback."""
    from kinject.api.auth import KEYS_FILE, KeyStore

    data = tmp_path / "data"
    writer = KeyStore(data / KEYS_FILE).create("ci", "write")[1]
    env = {k: v for k, v in os.environ.items() if k != "KINJECT_KAFKA__BOOTSTRAP_SERVERS"}
    env.update({"KINJECT_MODELS__EMBEDDER": "hash", "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir),
                "KINJECT_DATA_DIR": str(data), "KINJECT_LOG_LEVEL": "INFO",
                "KINJECT_RAG__MODE": "free", "OMP_NUM_THREADS": "1"})

    def clean_stop(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        log = (tmp_path / "stderr.log").read_text()
        assert "kinject serve stopped" in log and "embedded Kafka broker stopped" in log, log
        bad = [ln for ln in log.splitlines() if " ERROR " in ln or "Traceback" in ln]
        assert not bad, log[-5000:]

    with _serve(env, tmp_path, workers=1) as (proc, url):
        clean_stop(proc)  # at once: the models, OCR and the ingest child are still loading

    with _serve(env, tmp_path, workers=1) as (proc, url):
        deadline = time.monotonic() + 180
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.3)
        r = httpx.post(f"{url}/v1/records", json={"records": [
            {"source_id": "kb/ida", "kind": "text", "content": "Ida Brook lives in Fenwick."}]},
            headers={"Authorization": f"Bearer {writer}"}, timeout=30)
        assert r.status_code == 202, r.text
        while not httpx.get(f"{url}/v1/search", params={"q": "Fenwick"}, timeout=30
                            ).json()["hits"]:
            assert time.monotonic() < deadline, "the record never reached the index"
            time.sleep(0.3)
        clean_stop(proc)


@pytest.mark.kafka
@pytest.mark.slow
def test_sigterm_mid_training_stops_the_job_and_serve_exits_cleanly(
        tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path) -> None:
    """A job started over HTTP trains (for hours, by its settings) when the server gets
    SIGTERM: the cycle is cancelled at its next step, serve exits 0 within its deadline (no
    abort under a live training thread), and the job store says the job ended."""
    from kinject.api.auth import KEYS_FILE, KeyStore
    from kinject.config.api import ApiSettings
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.jobs import CANCELLED, CycleLock, JobStore, corpus_path, finetune_dir
    from kinject.finetune.registry import AdapterRegistry
    from kinject.types import Chunk, content_hash

    data = tmp_path / "data"
    admin = KeyStore(data / KEYS_FILE).create("ci", "admin")[1]
    texts = {"kb/ida": "name: Ida Brook\ncity: Fenwick", "kb/oren": "name: Oren Vale\ncity: Tamsk"}
    with CorpusStore(corpus_path(data)) as corpus:
        corpus.add_chunks([Chunk(chunk_id=content_hash(s, t), doc_id=s, source_id=s, text=t,
                                 kind="csv") for s, t in texts.items()])
    env = {**os.environ, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": "api-cli-job", "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_MODELS__DEVICE": "cpu",
           "KINJECT_DATA_DIR": str(data), "KINJECT_FINETUNE__MATERIALISE_CORPUS": "false",
           "KINJECT_FINETUNE__EPOCHS": "100000", "KINJECT_FINETUNE__LORA_R": "4",
           "KINJECT_FINETUNE__EVAL_EVERY": "0", "KINJECT_FINETUNE__CHECKPOINT_EVERY": "0",
           "KINJECT_RAG__MODE": "free",  # no reader model to load beside the training
           "OMP_NUM_THREADS": "1"}
    with _serve(env, tmp_path) as (proc, url):
        r = httpx.post(f"{url}/v1/finetune/jobs", headers={"Authorization": f"Bearer {admin}"},
                       timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        bound = time.monotonic() + 300  # only keeps a broken run from hanging CI
        while True:
            job = httpx.get(f"{url}/v1/finetune/jobs/{job_id}", timeout=10).json()
            if job["stage"] == "training" and job["progress"] > 0.02:
                break  # at least one optimizer step done, the rest would take hours
            assert job["status"] in ("queued", "running") and time.monotonic() < bound, job
            time.sleep(0.2)

        proc.send_signal(signal.SIGTERM)
        # the API's graceful stop (5 s) and the threads' deadline, with room for a busy box
        assert proc.wait(timeout=5 + ApiSettings().stop_grace_s + 30) == 0, (
            tmp_path / "stderr.log").read_text()[-3000:]
    store = JobStore.for_data_dir(data)
    ended = store.get(job_id)
    store.close()
    assert ended.status == "interrupted" and (ended.error or "").startswith(CANCELLED), ended
    assert AdapterRegistry.for_data_dir(data).versions() == []
    assert not CycleLock(finetune_dir(data) / "cycle.lock").held_elsewhere()
