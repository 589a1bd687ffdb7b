"""Graceful shutdown of the processes that run fine-tuning cycles: SIGTERM (what Docker and
Kubernetes send, then SIGKILL ~10 s later) stops a cycle at its next training step, the job
reads 'interrupted', the lock is free and the next cycle resumes from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kinject.finetune.corpus import CorpusStore
from kinject.finetune.jobs import CANCELLED, CycleLock, JobStore, corpus_path, finetune_dir
from kinject.finetune.registry import AdapterRegistry
from kinject.types import Chunk, content_hash

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Only keeps a broken shutdown from passing or hanging CI: a correctness bound, not a timing.
EXIT_BOUND_S = 30
TEXTS = {"kb/ida": "name: Ida Brook\ncity: Fenwick", "kb/oren": "name: Oren Vale\ncity: Tamsk"}


def _env(data: Path, bootstrap: str, model: Path, prefix: str) -> dict[str, str]:
    with CorpusStore(corpus_path(data)) as corpus:
        corpus.add_chunks([Chunk(chunk_id=content_hash(s, t), doc_id=s, source_id=s, text=t,
                                 kind="csv") for s, t in TEXTS.items()])
    # 20 epochs of 3 steps: stopped after the second step (progress passes 0.03 there), then
    # finished by the next serve. No periodic checkpoint: the one the cancel writes is what
    # resumes. Free answering: the reader model (read mode) is not what is tested here.
    return {**os.environ, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "KINJECT_KAFKA__TOPIC_PREFIX": prefix, "KINJECT_MODELS__EMBEDDER": "hash",
            "KINJECT_MODELS__GENERATOR": str(model), "KINJECT_MODELS__DEVICE": "cpu",
            "KINJECT_DATA_DIR": str(data), "KINJECT_FINETUNE__MATERIALISE_CORPUS": "false",
            "KINJECT_FINETUNE__EPOCHS": "20", "KINJECT_RAG__MODE": "free",
            "KINJECT_FINETUNE__LORA_R": "4",
            "KINJECT_FINETUNE__EVAL_EVERY": "0", "KINJECT_FINETUNE__CHECKPOINT_EVERY": "1000",
            "KINJECT_FINETUNE__FISHER_SAMPLES": "4", "KINJECT_GATE__MAX_NEW_TOKENS": "4",
            "KINJECT_FINETUNE__PATIENCE": "100000",  # no early stop before the signal
            # a step and its checkpoint took over the default 6 s on cores shared 10 ways:
            # the cycle was recorded "did not stop in time" instead of checkpointed
            "KINJECT_API__STOP_GRACE_S": "60",
            "OMP_NUM_THREADS": "1"}


@contextmanager
def _serve(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with log.open("a") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "kinject", "serve", "--port", "0",
                                 "--workers", "0"], env=env, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("kinject serving on http://127.0.0.1:"), log.read_text()
            yield proc, line.split()[-1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _training(get: Any, bound_s: float = 300) -> None:
    """Wait until the job has done two optimizer steps of its 60 (``get`` returns its
    record; progress 0.02 is where training starts, 0.8 where it ends)."""
    deadline = time.monotonic() + bound_s
    while True:
        job = get()
        if job["stage"] == "training" and job["progress"] > 0.03:
            return
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.2)


def _stopped(proc: subprocess.Popen[str], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit {EXIT_BOUND_S} s after SIGTERM:\n{log.read_text()[-3000:]}")


def test_sigterm_mid_cycle_interrupts_the_job_and_the_next_cycle_resumes(
        tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path) -> None:
    from kinject.api.auth import KEYS_FILE, KeyStore

    data, log = tmp_path / "data", tmp_path / "serve.log"
    admin = {"Authorization": f"Bearer {KeyStore(data / KEYS_FILE).create('ci', 'admin')[1]}"}
    env = _env(data, kafka_bootstrap, tiny_lm_dir, "shutdown-serve")
    with _serve(env, log) as (proc, url):
        r = httpx.post(f"{url}/v1/finetune/jobs", headers=admin, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        _training(lambda: httpx.get(f"{url}/v1/finetune/jobs/{job_id}", timeout=10).json())
        assert _stopped(proc, log) == 0  # a server asked to stop has done its job
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert not CycleLock(finetune_dir(data) / "cycle.lock").held_elsewhere()
    assert AdapterRegistry.for_data_dir(data).versions() == []  # nothing half-registered
    assert (finetune_dir(data) / "run" / "checkpoint" / "state.json").is_file()

    with _serve(env, log) as (proc, url):
        job = httpx.get(f"{url}/v1/finetune/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "interrupted", job
        assert job["error"].startswith(CANCELLED) and "(checkpointed)" in job["error"], job
        r = httpx.post(f"{url}/v1/finetune/jobs", headers=admin, timeout=30)
        assert r.status_code == 202, r.text  # the lock is free: a new cycle starts
        again = r.json()["id"]
        deadline = time.monotonic() + 600
        while (done := httpx.get(f"{url}/v1/finetune/jobs/{again}", timeout=10).json()
               )["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, done
            time.sleep(0.5)
        assert done["status"] == "succeeded", done
        assert done["metrics"].get("resumed_from_step", 0) > 0, done["metrics"]
        assert done["train_examples"] > 0 and done["version"]
        assert _stopped(proc, log) == 0


def test_sigterm_stops_finetune_run_with_143_and_the_job_interrupted(
        tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "run.log"
    env = _env(data, kafka_bootstrap, tiny_lm_dir, "shutdown-run")
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "kinject", "finetune", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    try:
        store = JobStore.for_data_dir(data)

        def record() -> dict[str, Any]:
            jobs = store.recent(1)
            if not jobs:
                assert proc.poll() is None, log.read_text()[-3000:]
                return {"stage": "", "progress": 0.0, "status": "queued"}
            return jobs[0].to_dict()

        _training(record)
        # 128 + SIGTERM: a one-shot command that did not finish says so to its caller
        assert _stopped(proc, log) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        [job] = store.recent(5)
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert job.status == "interrupted" and (job.error or "").startswith(CANCELLED), job
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert not CycleLock(finetune_dir(data) / "cycle.lock").held_elsewhere()
    assert AdapterRegistry.for_data_dir(data).versions() == []
