"""Fine-tuning cycles end to end with the tiny model: corpus -> trainer -> registry -> gate."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kinject.config import Settings, load_settings
from kinject.errors import Cancelled, NotFound
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.jobs import (
    CANCELLED,
    INTERRUPTED,
    CycleLock,
    JobBusy,
    JobStore,
    JobThreads,
    corpus_path,
    finetune_dir,
    pending_examples,
    recover_interrupted,
    run_cycle,
    run_schedule,
    start_job,
)
from kinject.finetune.registry import AdapterRegistry
from kinject.finetune.trainer import TrainConfig
from kinject.types import Chunk, content_hash

PEOPLE = [
    ("kb/ida", "Ida Brook", "Fenwick", "Harbour Board"),
    ("kb/oren", "Oren Vale", "Tamsk", "Glass Works"),
    ("kb/pia", "Pia Lund", "Oskarn", "Salt Office"),
    ("kb/tor", "Tor Keld", "Brimmer", "Lamp Guild"),
    ("kb/ula", "Ula Moss", "Quarrow", "Rope Hall"),
]

FAST = TrainConfig(r=8, alpha=16, dropout=0.0, lr=5e-3, epochs=4, batch_size=8,
                   eval_every=0, checkpoint_every=0, fisher_samples=8, warmup_steps=0,
                   patience=10, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def person(source_id: str, name: str, city: str, employer: str) -> Chunk:
    text = f"name: {name}\ncity: {city}\nemployer: {employer}"
    return Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id, source_id=source_id,
                 text=text, kind="csv")


def settings_for(data_dir: Path, model_dir: Path, **gate: float) -> Settings:
    return load_settings(data_dir=data_dir, models={"generator": str(model_dir),
                                                    "device": "cpu"},
                         gate={"tie_break_nll": 0.01, "max_ppl_increase": 10.0, **gate})


def add_people(data_dir: Path, people: list[tuple[str, str, str, str]]) -> None:
    with CorpusStore(corpus_path(data_dir)) as corpus:
        corpus.add_chunks([person(*p) for p in people])


@pytest.mark.slow
def test_cycles_train_register_gate_promote_and_carry_on(data_dir: Path,
                                                          tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:3])
    assert pending_examples(settings) > 0
    store = JobStore.for_data_dir(data_dir)
    job = store.create()
    first = run_cycle(settings, store=store, job_id=job.id, train_config=FAST)

    registry = AdapterRegistry.for_data_dir(data_dir)
    assert first.status == "promoted", first.report["reasons"]
    assert registry.active() == first.version and first.parent is None
    v1 = registry.get(first.version)
    assert v1.status == "promoted" and v1.corpus_cycle == 1
    assert v1.lineage == ("kb/ida", "kb/oren", "kb/pia")
    assert v1.report["promote"] is True and v1.report["candidate"]["n_new"] > 0
    assert (registry.path(v1.version) / "ewc_state.safetensors").is_file()
    record = store.get(job.id)
    assert record.status == "succeeded" and record.progress == 1.0
    assert record.result["version"] == first.version
    assert pending_examples(settings) == 0

    # nothing new: nothing to run
    assert run_cycle(settings, train_config=FAST).status == "skipped"

    # cycle 2 trains the new people only, from v1, and checks retention of the first three
    add_people(data_dir, PEOPLE[3:])
    with CorpusStore(corpus_path(data_dir)) as corpus:
        new_examples = len(corpus.examples(cycles=[2]))
    second = run_cycle(settings, train_config=FAST)
    assert second.parent == first.version and second.corpus_cycle == 2
    assert second.train_examples == new_examples
    assert second.report["candidate"]["n_retention"] > 0
    v2 = registry.get(second.version)
    assert set(v2.lineage) == {p[0] for p in PEOPLE}
    assert v2.status in ("promoted", "rejected")
    if v2.status == "rejected":
        assert registry.active() == first.version
    store.close()


@pytest.mark.slow
def test_a_rejected_candidate_is_kept_with_its_report_and_nothing_changes(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    # no candidate can raise accuracy by more than 1.0: the gate must reject
    settings = settings_for(data_dir, tiny_lm_dir, min_new_gain=1.0, tie_break_nll=0.0)
    add_people(data_dir, PEOPLE[:2])
    result = run_cycle(settings, train_config=FAST)
    registry = AdapterRegistry.for_data_dir(data_dir)
    assert result.status == "rejected" and registry.active() is None
    kept = registry.get(result.version or "")
    assert kept.status == "rejected" and kept.report["promote"] is False
    assert any("did not improve" in r for r in kept.report["reasons"])


@pytest.mark.slow
def test_a_version_activated_by_hand_is_replayed_by_the_next_cycle(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    """An operator activates a version the gate rejected; the next cycle trains on what came
    after it, and replays what it was trained on (a promotion would have put that in the
    reservoir; a hand activation must not leave it out of every later cycle)."""
    settings = settings_for(data_dir, tiny_lm_dir, min_new_gain=1.0, tie_break_nll=0.0)
    add_people(data_dir, PEOPLE[:2])
    first = run_cycle(settings, train_config=FAST)
    registry = AdapterRegistry.for_data_dir(data_dir)
    assert first.status == "rejected"
    registry.activate(first.version or "", "operator")
    add_people(data_dir, PEOPLE[2:4])
    second = run_cycle(settings, train_config=FAST)
    assert second.parent == first.version
    with CorpusStore(corpus_path(data_dir)) as corpus:
        first_ids = {e.example_id for e in corpus.examples(cycles=[1])}
    assert second.metrics["replay_available"] == len(first_ids) > 0
    assert {"kb/ida", "kb/oren"} <= set(registry.get(second.version or "").lineage)


@pytest.mark.slow
def test_the_gate_measures_the_held_out_part_of_the_general_text(data_dir: Path,
                                                                 tiny_lm_dir: Path) -> None:
    """With ``finetune.general_text`` pointing at a corpus of one's own, training replays its
    training part and the gate's perplexity is that of its held-out sample, never of text
    trained on."""
    import json

    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.general_text import gate_sample

    held = [f"The lighthouse keeper wrote entry {i} about the weather at sea." for i in range(6)]
    train = [f"马罗研究所第{i}次年会在大理举行，会上讨论了新的研究计划。" for i in range(9)]
    path = data_dir / "general.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "split": s}, ensure_ascii=False) + "\n"
                            for s, part in (("held_out", held), ("train", train))
                            for t in part), encoding="utf-8")
    settings = load_settings(data_dir=data_dir, models={"generator": str(tiny_lm_dir),
                                                        "device": "cpu"},
                             finetune={"general_text": str(path)},
                             gate={"tie_break_nll": 0.01, "max_ppl_increase": 10.0,
                                   "general_texts": 4})
    add_people(data_dir, PEOPLE[:2])
    result = run_cycle(settings, train_config=FAST)
    assert result.metrics["general_available"] == len(train)
    sample = gate_sample(4, path)
    assert len(sample) == 4 and set(sample) <= set(held)
    report = result.report
    assert report["baseline"]["n_general"] == report["candidate"]["n_general"] == 4
    # no adapter served yet: the baseline is the base model, measured on the held-out sample
    base = ClosedBookEvaluator(tiny_lm_dir)
    assert report["baseline"]["general_ppl"] == pytest.approx(base.perplexity(sample), rel=1e-5)
    assert report["baseline"]["general_ppl"] != pytest.approx(base.perplexity(train), rel=1e-2)


def test_a_failed_cycle_leaves_the_active_adapter_alone(data_dir: Path, tiny_lm_dir: Path,
                                                        tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_lm_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    settings = settings_for(data_dir, broken)
    registry = AdapterRegistry.for_data_dir(data_dir)
    add_people(data_dir, PEOPLE[:1])
    store = JobStore.for_data_dir(data_dir)
    job = store.create()
    with pytest.raises(Exception):  # noqa: B017 (whatever the loader raises)
        run_cycle(settings, store=store, job_id=job.id, train_config=FAST)
    assert registry.active() is None and registry.versions() == []
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error
    # the lock went with the failure: another cycle can start
    assert not CycleLock(finetune_dir(data_dir) / "cycle.lock").held_elsewhere()
    with pytest.raises(NotFound):
        store.get("no-such-job")
    store.close()


def test_one_cycle_at_a_time_and_a_killed_holder_frees_the_lock(data_dir: Path,
                                                                 tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    lock_file = finetune_dir(data_dir) / "cycle.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from kinject.finetune.jobs import CycleLock
        lock = CycleLock({str(lock_file)!r})
        lock.acquire()
        print("held", flush=True)
        sys.stdin.read()  # holds the lock until killed, or until the test's end closes stdin
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        store = JobStore.for_data_dir(data_dir)
        job = store.create()
        with pytest.raises(JobBusy, match="already running"):
            run_cycle(settings, store=store, job_id=job.id, train_config=FAST)
        assert store.get(job.id).status == "failed"
        with pytest.raises(JobBusy):
            start_job(settings, store)
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait(10)
        assert not CycleLock(lock_file).held_elsewhere()
        store.close()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_job_whose_process_died_reads_as_interrupted(data_dir: Path) -> None:
    store = JobStore.for_data_dir(data_dir)
    job = store.create()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.update(job.id, status="running", pid=dead.pid)
    got = JobStore.for_data_dir(data_dir).get(job.id)
    assert got.status == "interrupted" and "ended" in (got.error or "")


@pytest.mark.slow
def test_background_job_and_schedule_on_volume(data_dir: Path, tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:2])
    store = JobStore.for_data_dir(data_dir)
    job = start_job(settings, store, train_config=FAST)
    deadline = threading.Event()
    for _ in range(600):
        if store.get(job.id).status not in ("queued", "running"):
            break
        deadline.wait(0.2)
    done = store.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.result["status"] in ("promoted", "rejected")
    # the service facade reads the same records and registry (what the API serves)
    from kinject.service import KinjectService

    svc = KinjectService(settings)
    seen = svc.finetune_job(job.id)
    assert seen["status"] == "succeeded" and seen["progress"] == 1.0
    assert seen["result"]["report"]["reasons"]
    assert [j["id"] for j in svc.finetune_jobs()] == [job.id]
    listed = svc.adapters()
    assert [a["version"] for a in listed] == [done.result["version"]]
    assert listed[0]["active"] is (done.result["status"] == "promoted")
    with pytest.raises(NotFound):
        svc.finetune_job("nope")

    # the scheduler starts a cycle once enough new examples wait, and only then
    stop = threading.Event()
    results = []

    def on_result(record: object) -> None:
        results.append(record)
        stop.set()

    add_people(data_dir, PEOPLE[2:3])
    waiting = pending_examples(settings)
    assert waiting > 0
    thread = threading.Thread(target=run_schedule, args=(settings, stop), kwargs={
        "every_min": 0, "min_new": waiting + 1, "poll_s": 0.1, "on_result": on_result})
    thread.start()
    stop.wait(1.0)
    assert results == []  # below the volume threshold: no cycle
    add_people(data_dir, PEOPLE[3:4])
    thread.join(300)
    assert len(results) == 1 and store.recent(1)[0].status == "succeeded"
    store.close()


# -- stopping -----------------------------------------------------------------------------------
# Training that would run for hours on the tiny model: only a stop ends it.
ENDLESS = dataclasses.replace(FAST, epochs=100_000, checkpoint_every=3)


def wait_for(store: JobStore, job_id: str, ready: object, bound_s: float = 300) -> None:
    """Poll until ``ready(record)``; the bound only keeps a broken run from hanging CI."""
    deadline = time.monotonic() + bound_s
    while not ready(store.get(job_id)):  # type: ignore[operator]
        assert time.monotonic() < deadline, store.get(job_id)
        time.sleep(0.1)


def test_a_job_stopped_mid_training_ends_interrupted_with_nothing_promoted_and_the_lock_free(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:2])
    store = JobStore.for_data_dir(data_dir)
    jobs = JobThreads()  # what the API's service keeps
    job = jobs.start(settings, train_config=ENDLESS)
    wait_for(store, job.id, lambda r: r.stage == "training" and r.progress > 0.02)

    assert jobs.stop(timeout_s=120) == []  # stopped and joined
    done = store.get(job.id)
    assert done.status == "interrupted" and done.finished_at is not None
    assert (done.error or "").startswith(CANCELLED), done.error
    assert "training stopped at step" in (done.error or "")
    registry = AdapterRegistry.for_data_dir(data_dir)
    assert registry.versions() == [] and registry.active() is None
    assert not CycleLock(finetune_dir(data_dir) / "cycle.lock").held_elsewhere()
    # the steps done are kept for a rerun with the same inputs (see test_trainer's resume)
    assert (finetune_dir(data_dir) / "run" / "checkpoint" / "state.json").is_file()
    # a stopping owner takes no new job; another process (the next serve) may
    with pytest.raises(JobBusy, match="shutting down"):
        jobs.start(settings, train_config=FAST)
    store.close()


def test_start_job_takes_a_stop_event(data_dir: Path, tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:1])
    store = JobStore.for_data_dir(data_dir)
    stop = threading.Event()
    job = start_job(settings, store, stop=stop, train_config=ENDLESS)
    wait_for(store, job.id, lambda r: r.stage == "training" and r.progress > 0.02)
    stop.set()
    wait_for(store, job.id, lambda r: r.status != "running")
    assert (store.get(job.id).error or "").startswith(CANCELLED)
    assert AdapterRegistry.for_data_dir(data_dir).versions() == []
    store.close()


def test_a_stop_during_the_gate_rejects_the_candidate_and_promotes_nothing(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:2])
    stop = threading.Event()

    def progress(event: dict[str, object]) -> None:
        if event.get("phase") == "gate":  # the shutdown lands once the candidate is in
            stop.set()

    store = JobStore.for_data_dir(data_dir)
    job = store.create()
    with pytest.raises(Cancelled, match="stopped before the gate"):
        run_cycle(settings, store=store, job_id=job.id, train_config=FAST, progress=progress,
                  stop=stop)
    registry = AdapterRegistry.for_data_dir(data_dir)
    assert registry.active() is None
    [kept] = registry.versions()
    assert kept.status == "rejected" and kept.report["promote"] is False
    assert "the gate did not finish" in kept.report["reasons"][0]
    assert (store.get(job.id).error or "").startswith(CANCELLED)
    assert not CycleLock(finetune_dir(data_dir) / "cycle.lock").held_elsewhere()
    # nothing was lost: the next cycle trains the same examples and judges its candidate
    again = run_cycle(settings, train_config=FAST)
    assert again.status in ("promoted", "rejected") and again.train_examples > 0
    assert again.parent is None and again.report["reasons"]
    store.close()


def test_a_job_left_running_by_a_dead_process_is_marked_interrupted(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    """kill -9 of a serve mid-cycle leaves its record 'running'; its pid may be alive again
    (a container's server is pid 1 after every restart), so only the free lock tells."""
    store = JobStore.for_data_dir(data_dir)
    orphan = store.create()
    store.update(orphan.id, status="running", pid=os.getpid(), stage="training")
    lock = CycleLock(finetune_dir(data_dir) / "cycle.lock")
    with lock:  # a cycle runs (here: its lock is held): the record may be true
        assert recover_interrupted(data_dir) == []
        assert store.get(orphan.id).status == "running"
    assert recover_interrupted(data_dir) == [orphan.id]  # what `kinject serve` does at start
    got = store.get(orphan.id)
    assert got.status == "interrupted" and got.error == INTERRUPTED and got.finished_at

    # the next cycle to take the lock does the same
    second = store.create()
    store.update(second.id, status="running", pid=os.getpid())
    assert run_cycle(settings_for(data_dir, tiny_lm_dir), train_config=FAST).status == "skipped"
    assert store.get(second.id).error == INTERRUPTED
    store.close()


def test_a_delete_during_the_gate_rejects_the_tainted_candidate_with_its_report(
        data_dir: Path, tiny_lm_dir: Path) -> None:
    """The materialiser taints the candidate while the gate runs (minutes on a real model):
    the cycle ends 'rejected' with the gate's report kept, not failed on a registry error."""
    from kinject.finetune.jobs import deletion_hook

    settings = settings_for(data_dir, tiny_lm_dir)
    add_people(data_dir, PEOPLE[:2])
    on_delete = deletion_hook(settings)
    deleted: list[str] = []

    def progress(event: dict[str, object]) -> None:
        if event.get("phase") == "gate" and not deleted:  # what the materialiser does
            with CorpusStore(corpus_path(data_dir)) as corpus:
                corpus.remove_source(PEOPLE[0][0])
            deleted.extend(on_delete(PEOPLE[0][0]))

    result = run_cycle(settings, train_config=FAST, progress=progress)
    registry = AdapterRegistry.for_data_dir(data_dir)
    assert deleted == [result.version]
    assert result.status == "rejected" and registry.active() is None
    candidate = registry.get(result.version or "")
    assert candidate.status == "tainted" and candidate.report.get("tainted_by") == [PEOPLE[0][0]]
    assert "candidate" in candidate.report  # the gate's verdict is kept beside the taint
