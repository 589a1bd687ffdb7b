"""Fine-tuning jobs: one cycle (corpus -> trainer -> registry -> gate -> promote), the lock
that keeps cycles one at a time, durable job records, and the scheduler.

A cycle:

1. takes the cycle lock (``fcntl.flock`` on ``<data_dir>/finetune/cycle.lock``: the OS
   releases it when the process dies, so a crashed job never leaves it held);
2. taints every adapter whose lineage names a source the corpus no longer holds (deletes
   reach the weights even if the corpus materialiser could not tell the registry);
3. starts from the newest untainted ancestor of the ACTIVE adapter (or the base model) and
   trains on every example that came after the corpus cycle that ancestor was trained
   through, with its online-EWC state and the replay reservoir;
4. registers the result (a candidate), runs the gate against what serves now, and promotes
   (ACTIVE moves, an event goes out on ``kinject.adapters``) or rejects it with its report.

A failure anywhere leaves ACTIVE as it was. Job records live in
``<data_dir>/finetune/jobs.sqlite3``.

Stopping: ``run_cycle(stop=...)`` checks the event between stages, before every training step
and before every batch of the gate; a set event ends the cycle with nothing promoted (nothing
registered when it comes before the gate) and the job recorded as failed, "cancelled: the
server shut down". ``JobThreads`` is what a server keeps of the cycles it started, to stop and
wait for them when it shuts down. A record still 'running' while nobody holds the cycle lock
was left by a process that died (the lock dies with it): ``recover_interrupted`` and every
cycle that takes the lock mark it failed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kinject.config import Settings
from kinject.errors import Cancelled, KinjectError, NotFound
from kinject.types import TrainingExample, content_hash

if TYPE_CHECKING:
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.evaluate import EvalQuestion
    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.trainer import TrainConfig

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
CORPUS_FILE = "corpus.sqlite3"
CANCELLED = "cancelled: the server shut down"
INTERRUPTED = "interrupted: the process that ran it ended"


class JobBusy(KinjectError):
    """Another fine-tuning cycle holds the lock."""

    code = "job_busy"


def finetune_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "finetune"


def corpus_path(data_dir: Path) -> Path:
    """Where the corpus materialiser keeps the corpus and where cycles read it."""
    return Path(data_dir) / "corpus" / CORPUS_FILE


# -- the lock -------------------------------------------------------------------------------
class CycleLock:
    """An exclusive, non-blocking lock on a file; the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            holder = self.path.read_text().strip() or "another process"
            raise JobBusy(f"a fine-tuning cycle is already running ({holder})") from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def held_elsewhere(self) -> bool:
        """Whether some process holds the lock now (this one excluded if it holds it)."""
        if self._fh is not None:
            return False
        try:
            self.acquire()
        except JobBusy:
            return True
        self.release()
        return False

    def __enter__(self) -> CycleLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- job records ----------------------------------------------------------------------------
@dataclass
class JobRecord:
    id: str
    kind: str = "cycle"
    status: str = "queued"  # queued, running, succeeded, skipped, failed
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    stage: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, progress REAL NOT NULL, stage TEXT NOT NULL,
    params TEXT NOT NULL, result TEXT NOT NULL, error TEXT, pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""
_COLUMNS = ("id", "kind", "status", "created_at", "started_at", "finished_at", "progress",
            "stage", "params", "result", "error", "pid")


class JobStore:
    """Job records in SQLite: every update is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_JOBS_SCHEMA)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> JobStore:
        return cls(finetune_dir(data_dir) / "jobs.sqlite3")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, kind: str = "cycle", params: dict[str, Any] | None = None) -> JobRecord:
        job = JobRecord(id=uuid.uuid4().hex[:16], kind=kind, created_at=time.time(),
                        params=dict(params or {}), pid=os.getpid())
        with self._lock:
            self._db.execute(f"INSERT INTO jobs({', '.join(_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(_COLUMNS))})", _row(job))
        return job

    def update(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        for key in ("params", "result"):
            if key in fields:
                fields[key] = json.dumps(fields[key], default=str)
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id=?",
                                   (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no fine-tuning job {job_id!r}")
        return self._fresh(_record(row))

    def recent(self, limit: int = 50) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY "
                                    "created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._fresh(_record(r)) for r in rows]

    def ids_with_status(self, status: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status=?", (status,)).fetchall()
        return [r[0] for r in rows]

    def _fresh(self, job: JobRecord) -> JobRecord:
        """A job whose process is gone cannot still be running: say it failed."""
        if job.status in ("queued", "running") and job.pid is not None and not _alive(job.pid):
            job.status, job.error = "failed", INTERRUPTED
            job.finished_at = job.finished_at or time.time()
            self.update(job.id, status=job.status, error=job.error, finished_at=job.finished_at)
        return job


def mark_interrupted(store: JobStore, keep: str | None = None) -> list[str]:
    """Mark every 'running' job but ``keep`` failed (INTERRUPTED) and return their ids. Only
    for a caller that holds the cycle lock: a job runs only under that lock, so while this
    process holds it no other 'running' record can be alive (its pid may live on in a new
    process: a container's server is pid 1 again after a restart)."""
    ids = [job_id for job_id in store.ids_with_status("running") if job_id != keep]
    for job_id in ids:
        store.update(job_id, status="failed", error=INTERRUPTED, finished_at=time.time())
    if ids:
        log.warning("fine-tuning job(s) %s were left running by a process that ended: marked "
                    "failed", ", ".join(ids))
    return ids


def recover_interrupted(data_dir: Path) -> list[str]:
    """At start: mark the jobs a dead process left 'running' as failed, unless a cycle is
    running now (then the lock is held and its records are left alone)."""
    lock = CycleLock(finetune_dir(data_dir) / "cycle.lock")
    try:
        lock.acquire()
    except JobBusy:
        return []
    try:
        store = JobStore.for_data_dir(data_dir)
        try:
            return mark_interrupted(store)
        finally:
            store.close()
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row(job: JobRecord) -> tuple[Any, ...]:
    d = job.to_dict()
    d["params"], d["result"] = json.dumps(d["params"]), json.dumps(d["result"], default=str)
    return tuple(d[c] for c in _COLUMNS)


def _record(row: Sequence[Any]) -> JobRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["params"], d["result"] = json.loads(d["params"]), json.loads(d["result"])
    return JobRecord(**d)


# -- one cycle ------------------------------------------------------------------------------
@dataclass
class CycleResult:
    status: str  # "promoted", "rejected", "skipped"
    version: str | None = None
    parent: str | None = None
    corpus_cycle: int = 0
    train_examples: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tainted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_model_dir(settings: Settings) -> Path:
    """The base model as a transformers folder (the GGUF default converted once)."""
    from kinject.models import ensure_converted, resolve_generator

    source = resolve_generator(settings.models.generator)
    cached = ensure_converted(source, settings.models_dir)
    return Path(cached if cached is not None else source.location)


def base_model_hash(model_dir: Path) -> str:
    """sha256 over the base model's weight files (names and bytes), cached beside nothing:
    about a second for SmolLM2."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).glob("*") if p.suffix in (".safetensors", ".bin"))
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _questions(pairs: Sequence[Any], limit: int, salt: str) -> list[EvalQuestion]:
    from kinject.finetune.evaluate import EvalQuestion

    qs = [EvalQuestion(p.question, p.answer, p.source_id, p.cycle) for p in pairs
          if p.question.strip() and p.answer.strip()]
    qs.sort(key=lambda q: content_hash(salt, q.question, q.answer))
    return qs[:limit]


def _split_held_out(qs: list[EvalQuestion]) -> tuple[list[EvalQuestion], list[EvalQuestion]]:
    """A quarter for the trainer's early stopping, the rest for the gate (all for both when
    there are too few to split)."""
    if len(qs) < 8:
        return qs, qs
    stop = [q for q in qs if int(content_hash("stop", q.question)[:2], 16) < 64]
    gate = [q for q in qs if q not in stop]
    return (stop, gate) if stop and gate else (qs, qs)


def _as_examples(qs: Sequence[EvalQuestion]) -> list[TrainingExample]:
    return [TrainingExample(example_id=content_hash("held-out", q.question), chunk_id="eval",
                            source_id=q.source_id or "eval", prompt=q.question,
                            completion=q.answer, form="qa", cycle=q.cycle) for q in qs]


def run_cycle(
    settings: Settings,
    *,
    store: JobStore | None = None,
    job_id: str | None = None,
    progress: Progress | None = None,
    publish: bool = True,
    train_config: TrainConfig | None = None,
    bootstrap: str | None = None,
    early_stopping: bool = True,
    lock: CycleLock | None = None,
    stop: threading.Event | None = None,
) -> CycleResult:
    """Run one fine-tuning cycle now; see the module docstring. Raises JobBusy when another
    cycle runs. ``job_id`` (in ``store``) receives status, progress and the result.
    ``early_stopping=False`` trains every epoch and keeps the last weights (no held-out
    questions go to the trainer; the gate still asks them). ``lock``: the cycle lock, already
    acquired by the caller (start_job), released here when the cycle ends. ``stop``: set when
    the process shuts down; the cycle then raises Cancelled at its next check (see the
    module docstring) and the job reads failed, CANCELLED."""
    held = lock is not None
    if lock is None:
        lock = CycleLock(finetune_dir(settings.data_dir) / "cycle.lock")
    own_store = store is None and job_id is not None
    if own_store:
        store = JobStore.for_data_dir(settings.data_dir)

    def note(**fields: Any) -> None:
        if store is not None and job_id is not None:
            store.update(job_id, **fields)

    try:
        if not held:
            lock.acquire()
    except JobBusy as exc:
        note(status="failed", error=str(exc), finished_at=time.time())
        if own_store and store is not None:
            store.close()
        raise
    note(status="running", started_at=time.time(), stage="starting", pid=os.getpid())
    try:
        _mark_orphans(settings, store, job_id)
        result = _cycle(settings, note, progress, publish, train_config, bootstrap,
                        early_stopping, stop)
    except Cancelled as exc:
        log.warning("fine-tuning cycle cancelled (%s); the active adapter is unchanged", exc)
        note(status="failed", error=f"{CANCELLED} ({exc})", finished_at=time.time())
        raise
    except BaseException as exc:
        log.exception("fine-tuning cycle failed; the active adapter is unchanged")
        note(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
        raise
    else:
        note(status="skipped" if result.status == "skipped" else "succeeded", progress=1.0,
             stage=result.status, result=result.to_dict(), finished_at=time.time())
        return result
    finally:
        lock.release()
        if own_store and store is not None:
            store.close()


def _mark_orphans(settings: Settings, store: JobStore | None, job_id: str | None) -> None:
    """With the lock held: the records other dead processes left 'running'."""
    jobs = store if store is not None else JobStore.for_data_dir(settings.data_dir)
    try:
        mark_interrupted(jobs, keep=job_id)
    finally:
        if store is None:
            jobs.close()


def _checker(stop: threading.Event | None) -> Callable[[str], None]:
    """``check(where)`` raises Cancelled once ``stop`` is set."""

    def check(where: str) -> None:
        if stop is not None and stop.is_set():
            raise Cancelled(f"stopped before {where}")

    return check


def _cycle(settings: Settings, note: Callable[..., None], progress: Progress | None,
           publish: bool, train_config: TrainConfig | None, bootstrap: str | None,
           early_stopping: bool = True, stop: threading.Event | None = None) -> CycleResult:
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.registry import AdapterRegistry

    t0 = time.perf_counter()
    registry = AdapterRegistry.for_data_dir(settings.data_dir)
    with CorpusStore(corpus_path(settings.data_dir)) as corpus:
        # Deletes reach the weights: whatever the corpus no longer holds taints its adapters.
        tainted, change = registry.taint_missing(corpus.sources())
        if change is not None:
            _announce(settings, change, publish, bootstrap)
        active = registry.active()
        init = registry.newest_untainted_ancestor(active)
        base_dir = base_model_dir(settings)
        base_hash = base_model_hash(base_dir)
        if init is not None and init.base_model_hash and init.base_model_hash != base_hash:
            log.warning("adapter %s was trained on another base model; training from the base",
                        init.version[:12])
            init = None
        since = init.corpus_cycle if init is not None else 0
        if corpus.new_since(since) == 0:
            log.info("nothing new since corpus cycle %d: no cycle to run", since)
            return CycleResult(status="skipped", parent=init.version if init else None,
                               corpus_cycle=since, tainted=tainted,
                               seconds=time.perf_counter() - t0)
        _checker(stop)("training")
        closed = corpus.next_cycle() - 1  # what arrives from now on is the next cycle's
        return _train_and_gate(settings, corpus, registry, init, since, closed, base_dir,
                               base_hash, tainted, note, progress, publish, train_config,
                               bootstrap, t0, early_stopping, stop)


def _train_and_gate(settings: Settings, corpus: CorpusStore, registry: AdapterRegistry,
                    init: Any, since: int, closed: int, base_dir: Path, base_hash: str,
                    tainted: list[str], note: Callable[..., None], progress: Progress | None,
                    publish: bool, train_config: TrainConfig | None, bootstrap: str | None,
                    t0: float, early_stopping: bool = True, stop: threading.Event | None = None
                    ) -> CycleResult:
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.ewc import EwcState
    from kinject.finetune.gate import GateConfig, run_gate
    from kinject.finetune.general_text import gate_sample, general_train
    from kinject.finetune.registry import EWC_STATE
    from kinject.finetune.replay import ReplayBuffer
    from kinject.finetune.trainer import LoraTrainer, TrainConfig

    gs = settings.gate
    check = _checker(stop)
    new_cycles = range(since + 1, closed + 1)
    train = corpus.examples(cycles=new_cycles)
    replay_buf = ReplayBuffer(corpus, capacity=settings.finetune.replay_capacity,
                              seed=settings.finetune.seed)
    replay_buf.catch_up(since)  # what the adapter trained from holds, even if not gated in
    train_ids = {e.example_id for e in train}
    replay = [e for e in replay_buf.examples() if e.example_id not in train_ids and
              e.cycle <= since]
    new_qs = _questions(corpus.qa_pairs(cycles=new_cycles), gs.max_questions, "new")
    old_qs = _questions(corpus.qa_pairs(cycles=range(1, since + 1)), gs.max_questions, "old")
    stop_qs, gate_qs = _split_held_out(new_qs)
    ewc = None
    if init is not None and (registry.path(init.version) / EWC_STATE).is_file():
        ewc = EwcState.load(registry.path(init.version) / EWC_STATE)
    config = train_config or TrainConfig.from_settings(
        settings.finetune, settings.models.device, settings.models.dtype)
    log.info("cycle over corpus cycles %d..%d: %d example(s), %d replay, from %s",
             since + 1, closed, len(train), len(replay),
             init.version[:12] if init else "the base model")
    paraphrased: list[TrainingExample] = []
    para_metrics: dict[str, float] = {}
    augment = None
    if settings.finetune.lm_paraphrases > 0:
        from kinject.finetune.paraphrase import ParaphraseConfig, ParaphraseStats, lm_augment

        def record(examples: list[TrainingExample], stats: ParaphraseStats) -> None:
            paraphrased.extend(examples)
            para_metrics.update(stats.to_metrics())
            if progress is not None:
                progress({"phase": "paraphrase", **stats.to_metrics()})

        # the same hook a launched job hands the trainer (kinject.finetune.launch)
        lm = lm_augment(corpus, corpus.chunks(cycles=new_cycles),
                        ParaphraseConfig.from_settings(settings.finetune), on_done=record)

        def augment(tok: Any, model: Any) -> list[TrainingExample]:
            check("paraphrasing")
            note(stage="paraphrasing", progress=0.01)
            return lm(tok, model)

    note(stage="training", progress=0.02)

    def on_progress(event: dict[str, Any]) -> None:
        if event.get("phase") == "train" and event.get("total_steps"):
            note(progress=round(0.02 + 0.78 * event["step"] / event["total_steps"], 4),
                 stage="training")
        if progress is not None:
            progress(event)

    run_dir = finetune_dir(settings.data_dir) / "run"
    result = LoraTrainer(config).train(
        base_dir, train, _as_examples(stop_qs) if early_stopping else [], run_dir,
        init_adapter=registry.path(init.version) if init is not None else None, ewc=ewc,
        replay=replay, general=general_train(path=settings.finetune.general_text),
        progress=on_progress, augment=augment,
        should_stop=stop.is_set if stop is not None else None)
    check("registering the candidate")
    train = [*train, *(e for e in paraphrased if e.example_id not in train_ids)]
    lineage = CorpusStore.sources_of(train) | CorpusStore.sources_of(replay)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics.update(para_metrics)
    metrics.update(seconds=result.seconds, tokens_per_s=result.tokens_per_s,
                   step_time_s=result.step_time_s)
    version = registry.add(
        result.adapter_dir, base_model=settings.models.generator, base_model_hash=base_hash,
        parent=init.version if init else None,
        corpus_manifest=CorpusStore.manifest([*train, *replay]), lineage=lineage,
        corpus_cycle=closed, train_config=result.config or config.to_dict(), metrics=metrics,
        ewc_state=result.ewc_path)
    # A delete that arrived while training taints the candidate before the gate sees it.
    newly, change = registry.taint_missing(corpus.sources())
    if change is not None:
        _announce(settings, change, publish, bootstrap)
    candidate = registry.get(version.version)
    note(stage="gate", progress=0.85)
    if progress is not None:
        progress({"phase": "gate", "questions": len(gate_qs) + len(old_qs)})
    baseline = registry.active()
    try:
        check("the gate")
        evaluator = ClosedBookEvaluator(base_dir, device=_eval_device(settings),
                                        max_new_tokens=gs.max_new_tokens,
                                        should_stop=stop.is_set if stop is not None else None)
        evaluator.add_adapter("candidate", registry.path(candidate.version))
        if baseline is not None:
            evaluator.add_adapter("baseline", registry.path(baseline))
        # After a delete forced serving back, the retrain is held to the perplexity bar of
        # the version it replaces (gate.py); only that version's general-text perplexity is
        # measured.
        displaced = _displaced_reference(registry, baseline, base_hash)
        if displaced is not None:
            evaluator.add_adapter("displaced", registry.path(displaced))
        report = run_gate(evaluator, "candidate", "baseline" if baseline else None, gate_qs,
                          old_qs, gate_sample(gs.general_texts, settings.finetune.general_text),
                          GateConfig(
                              max_retention_drop=gs.max_retention_drop,
                              max_ppl_increase=gs.max_ppl_increase,
                              min_new_gain=gs.min_new_gain, tie_break_nll=gs.tie_break_nll),
                          tainted=candidate.status == "tainted",
                          reference="displaced" if displaced is not None else None)
    except Cancelled as exc:  # registered but never judged: kept, rejected, never served
        if registry.get(candidate.version).status == "candidate":
            registry.set_status(candidate.version, "rejected", {
                "promote": False, "reasons": [f"the gate did not finish: {CANCELLED} ({exc})"]})
        raise
    report_d = {**report.to_dict(), "baseline_version": baseline,
                "reference_version": displaced}
    scores = {"new_accuracy": report.candidate.new_accuracy,
              "retention_accuracy": report.candidate.retention_accuracy,
              "general_ppl": report.candidate.general_ppl, "new_nll": report.candidate.new_nll}
    if candidate.status == "tainted":
        registry.set_status(candidate.version, "tainted", report_d, _finite(scores))
        status = "rejected"
    elif report.promote:
        registry.set_status(candidate.version, "promoted", report_d, _finite(scores))
        _announce(settings, registry.activate(candidate.version, "promoted"), publish,
                  bootstrap)
        replay_buf.offer(train)
        status = "promoted"
    else:
        registry.set_status(candidate.version, "rejected", report_d, _finite(scores))
        status = "rejected"
    log.info("cycle done: %s %s", status, candidate.version[:12])
    return CycleResult(status=status, version=candidate.version,
                       parent=init.version if init else None, corpus_cycle=closed,
                       train_examples=len(train), report=report_d,
                       metrics={**metrics, **_finite(scores)}, tainted=tainted + newly,
                       seconds=time.perf_counter() - t0)


def _displaced_reference(registry: AdapterRegistry, baseline: str | None, base_hash: str
                         ) -> str | None:
    """The version a delete displaced, if its weights are still there and fit this base."""
    from kinject.finetune.registry import WEIGHTS

    displaced = registry.displaced_by_taint()
    if displaced is None or displaced == baseline:
        return None
    if not (registry.versions_dir / displaced / WEIGHTS).is_file():
        log.warning("adapter %s, displaced by a delete, is gone: the gate measures from "
                    "what serves now", displaced[:12])
        return None
    meta = registry.get(displaced)
    if meta.base_model_hash and meta.base_model_hash != base_hash:
        return None
    return displaced


def _finite(d: dict[str, float]) -> dict[str, float]:
    import math

    return {k: v for k, v in d.items() if isinstance(v, int | float) and math.isfinite(v)}


def _eval_device(settings: Settings) -> str:
    from kinject.models import select_device

    return select_device(settings.models.device)


def _announce(settings: Settings, change: Any, publish: bool, bootstrap: str | None) -> None:
    """Publish a change of ACTIVE on kinject.adapters when a broker is configured; replicas
    sharing the data dir follow the pointer file anyway, so a broker that is down only
    delays the others."""
    target = bootstrap or settings.kafka.bootstrap_servers
    if not publish or not target:
        return
    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.serving import publish_activation

    try:
        publish_activation(settings.kafka, target, change,
                           registry=AdapterRegistry.for_data_dir(settings.data_dir),
                           publish_url=settings.finetune.publish_url)
    except KinjectError as exc:
        log.error("could not announce the adapter change on Kafka: %s", exc)
    except Exception as exc:  # a Kafka client error must not undo a promotion
        log.error("could not announce the adapter change on Kafka: %s", exc)


def deletion_hook(settings: Settings, *, publish: bool = True, bootstrap: str | None = None
                  ) -> Callable[[str], list[str]]:
    """For the corpus materialiser's ``on_delete``: taint every adapter trained on the
    deleted source; when the serving one is among them, ACTIVE falls back to its newest
    untainted promoted ancestor (or the base) and the change is announced."""
    from kinject.finetune.registry import AdapterRegistry

    registry = AdapterRegistry.for_data_dir(settings.data_dir)

    def on_delete(source_id: str) -> list[str]:
        tainted, change = registry.taint_source(source_id)
        if change is not None:
            _announce(settings, change, publish, bootstrap)
        return tainted

    return on_delete


# -- background jobs and the scheduler -----------------------------------------------------
def start_job(settings: Settings, store: JobStore | None = None, *,
              stop: threading.Event | None = None, **kwargs: Any) -> JobRecord:
    """Record a job and run the cycle in a background thread; returns the queued record.

    Raises JobBusy at once when another cycle holds the lock. The lock is taken here and
    handed to the thread, so of two requests that arrive together one gets JobBusy rather
    than a job that fails later. The thread writes to its own connection of the job store,
    so ``store`` may be closed when this returns. ``stop``: see run_cycle; JobThreads keeps
    the thread as well, for a server to wait on.
    """
    return _launch(settings, store, stop, kwargs)[0]


def _launch(settings: Settings, store: JobStore | None, stop: threading.Event | None,
            kwargs: dict[str, Any]) -> tuple[JobRecord, threading.Thread]:
    lock = CycleLock(finetune_dir(settings.data_dir) / "cycle.lock")
    lock.acquire()  # JobBusy when another cycle runs
    own = store is None
    try:
        jobs = store if store is not None else JobStore.for_data_dir(settings.data_dir)
        try:
            job = jobs.create("cycle", params={k: str(v) for k, v in kwargs.items()})
        finally:
            if own:
                jobs.close()
    except BaseException:
        lock.release()
        raise

    def work() -> None:
        try:
            run_cycle(settings, job_id=job.id, lock=lock, stop=stop, **kwargs)
        except Exception:  # recorded in the job; nothing else to do in a thread
            pass

    # A daemon all the same: should a step outlast the stop deadline, the process still ends.
    thread = threading.Thread(target=work, name=f"finetune-{job.id}", daemon=True)
    thread.start()
    return job, thread


class JobThreads:
    """The background cycles one process started (the API's): ``stop`` cancels them (at the
    next training step or gate batch) and waits for them to end."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: dict[str, tuple[threading.Thread, Path]] = {}
        self._lock = threading.Lock()

    def start(self, settings: Settings, **kwargs: Any) -> JobRecord:
        """start_job with this owner's stop event; JobBusy once stopping."""
        with self._lock:
            if self.stopping.is_set():
                raise JobBusy("the server is shutting down: no new fine-tuning cycle starts")
            job, thread = _launch(settings, None, self.stopping, kwargs)
            self._threads = {k: v for k, v in self._threads.items() if v[0].is_alive()}
            self._threads[job.id] = (thread, Path(settings.data_dir))
        return job

    def stop(self, timeout_s: float) -> list[str]:
        """Cancel every cycle and wait up to ``timeout_s`` in all; returns the ids of the jobs
        still running then. Their records say CANCELLED at once: the process is about to end
        under them (and the OS to free their lock); one that ends after all writes its own."""
        with self._lock:
            self.stopping.set()
            running = dict(self._threads)
        deadline = time.monotonic() + timeout_s
        for thread, _ in running.values():
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        left = {job_id: d for job_id, (t, d) in running.items() if t.is_alive()}
        if left and timeout_s > 0:
            log.warning("fine-tuning job(s) %s did not stop within %.0f s", ", ".join(left),
                        timeout_s)
            for job_id, data_dir in left.items():
                store = JobStore.for_data_dir(data_dir)
                try:
                    store.update(job_id, status="failed", finished_at=time.time(),
                                 error=f"{CANCELLED} (it did not stop in time)")
                finally:
                    store.close()
        return list(left)


def pending_examples(settings: Settings) -> int:
    """Examples that arrived since the last cycle took the corpus."""
    from kinject.finetune.corpus import CorpusStore

    path = corpus_path(settings.data_dir)
    if not path.is_file():
        return 0
    with CorpusStore(path) as corpus:
        return corpus.new_since(corpus.current_cycle() - 1)


def run_schedule(settings: Settings, stop: threading.Event, *, every_min: float | None = None,
                 min_new: int | None = None, on_result: Callable[[JobRecord], None] | None = None,
                 poll_s: float | None = None) -> int:
    """Run cycles until ``stop`` is set: every ``every_min`` minutes when anything new
    arrived, and as soon as ``min_new`` new examples are waiting. Returns cycles run."""
    every = settings.schedule.every_min if every_min is None else every_min
    volume = settings.schedule.min_new if min_new is None else min_new
    poll = settings.schedule.poll_s if poll_s is None else poll_s
    if every <= 0 and volume <= 0:
        raise ValueError("give --every MIN and/or --min-new N (both are off)")
    store = JobStore.for_data_dir(settings.data_dir)
    last, ran = time.monotonic(), 0
    try:
        while not stop.is_set():
            waiting = pending_examples(settings)
            due = every > 0 and time.monotonic() - last >= every * 60
            if waiting and ((volume > 0 and waiting >= volume) or due):
                job = store.create("cycle", params={"trigger": "volume" if volume > 0 and
                                                    waiting >= volume else "timer"})
                try:
                    run_cycle(settings, store=store, job_id=job.id)
                except JobBusy:
                    log.info("a cycle is running elsewhere; trying again later")
                except Exception as exc:
                    log.error("scheduled cycle failed: %s", exc)
                ran += 1
                last = time.monotonic()
                if on_result is not None:
                    on_result(store.get(job.id))
            elif due:
                last = time.monotonic()
            stop.wait(poll)
    finally:
        store.close()
    return ran
