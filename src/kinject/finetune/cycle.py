"""One fine-tuning cycle: corpus -> trainer -> registry -> gate -> promote -> announce.

A cycle:

1. takes the cycle lock (finetune/cycle_lock.py);
2. taints every adapter whose lineage names a source the corpus no longer holds (deletes
   reach the weights even if the corpus materialiser could not tell the registry);
3. starts from the newest untainted ancestor of the ACTIVE adapter (or the base model) and
   trains on every example that came after the corpus cycle that ancestor was trained
   through, with its online-EWC state and the replay reservoir;
4. registers the result (a candidate), runs the gate against what serves now, and promotes
   (ACTIVE moves and the ``announce`` callback tells the other replicas) or rejects it with
   its report.

A failure anywhere leaves ACTIVE as it was. The stages are in finetune/cycle_stages.py.

Stopping: ``run_cycle(stop=...)`` checks the event between stages, before every training step
and before every batch of the gate; a set event ends the cycle with nothing promoted (nothing
registered when it comes before the gate), the lock released and the job recorded as
'interrupted' (error: CANCELLED and where it stopped). The trainer checkpoints the steps done
(when checkpoints are on): the next cycle over the same examples resumes from them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import Cancelled
from kinject.finetune.cycle_lock import CycleLock, JobBusy, cycle_lock
from kinject.finetune.job_store import (
    CANCELLED,
    STATUS_INTERRUPTED,
    JobStore,
    mark_interrupted,
)
from kinject.finetune.memory import release_memory
from kinject.finetune.paths import corpus_path

if TYPE_CHECKING:
    from kinject.finetune.announce import Announce
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.registry import Activation, AdapterRegistry
    from kinject.finetune.trainer import TrainConfig
    from kinject.types import AdapterVersion

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
Note = Callable[..., None]


def _no_note(**fields: Any) -> None:
    return None


@dataclass(frozen=True)
class CycleConfig:
    """How one cycle runs: what ``run_cycle`` was asked. The training and gate defaults are
    the Settings' (``train_config`` None: ``TrainConfig.from_settings``)."""

    settings: Settings
    train_config: TrainConfig | None = None
    # False: train every epoch and keep the last weights (no held-out questions go to the
    # trainer; the gate still asks them)
    early_stopping: bool = True
    announce: Announce | None = None  # tells other replicas ACTIVE moved (None: nobody)
    progress: Progress | None = None  # every trainer/gate event, for a progress bar
    note: Note = _no_note  # the job record's fields (status, stage, progress)
    stop: threading.Event | None = None  # set: the cycle raises Cancelled at its next check

    def check(self, where: str) -> None:
        """Raise Cancelled once ``stop`` is set."""
        if self.stop is not None and self.stop.is_set():
            raise Cancelled(f"stopped before {where}")

    def should_stop(self) -> Callable[[], bool] | None:
        return self.stop.is_set if self.stop is not None else None

    def report(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event)

    def tell(self, change: Activation | None) -> None:
        """Announce a change of ACTIVE; a failure to announce never undoes it (replicas
        sharing the data dir follow the pointer file anyway)."""
        if change is None or self.announce is None:
            return
        try:
            self.announce(change)
        except Exception as exc:
            log.error("could not announce the adapter change: %s", exc)


@dataclass(frozen=True)
class CycleStart:
    """Where a cycle starts, fixed once the lock is held and the corpus cycle is closed."""

    registry: AdapterRegistry
    corpus: CorpusStore
    init: AdapterVersion | None  # the adapter training continues from (None: the base)
    since: int  # the corpus cycle ``init`` was trained through
    closed: int  # the last corpus cycle this one trains on
    base_dir: Path
    base_hash: str
    tainted: list[str]  # versions tainted on the way in
    t0: float  # perf_counter at the start, for CycleResult.seconds


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


def run_cycle(
    settings: Settings,
    *,
    store: JobStore | None = None,
    job_id: str | None = None,
    progress: Progress | None = None,
    announce: Announce | None = None,
    train_config: TrainConfig | None = None,
    early_stopping: bool = True,
    lock: CycleLock | None = None,
    stop: threading.Event | None = None,
) -> CycleResult:
    """Run one fine-tuning cycle now; see the module docstring. Raises JobBusy when another
    cycle runs. ``job_id`` (in ``store``) receives status, progress and the result.
    ``announce``: called with every change of ACTIVE the cycle makes (the wiring passes
    ``kinject.stream.adapter_events.kafka_announcer``). ``lock``: the cycle lock, already
    acquired by the caller (start_job), released here when the cycle ends. ``stop``: set when
    the process shuts down; the job then reads interrupted (CANCELLED)."""
    held = lock is not None
    if lock is None:
        lock = cycle_lock(settings.data_dir)
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
    cfg = CycleConfig(settings, train_config=train_config, early_stopping=early_stopping,
                      announce=announce, progress=progress, note=note, stop=stop)
    try:
        _mark_orphans(settings, store, job_id)
        result = _cycle(cfg)
    except Cancelled as exc:
        log.warning("fine-tuning cycle cancelled (%s); the active adapter is unchanged", exc)
        note(status=STATUS_INTERRUPTED, error=f"{CANCELLED} ({exc})", finished_at=time.time())
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
        release_memory()  # the gate's model and what the cycle built (finetune/memory.py)


def _mark_orphans(settings: Settings, store: JobStore | None, job_id: str | None) -> None:
    """With the lock held: the records other dead processes left 'running'."""
    jobs = store if store is not None else JobStore.for_data_dir(settings.data_dir)
    try:
        mark_interrupted(jobs, keep=job_id)
    finally:
        if store is None:
            jobs.close()


def _cycle(cfg: CycleConfig) -> CycleResult:
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.cycle_stages import train_and_gate
    from kinject.finetune.registry import AdapterRegistry

    t0 = time.perf_counter()
    settings = cfg.settings
    registry = AdapterRegistry.for_data_dir(settings.data_dir)
    with CorpusStore(corpus_path(settings.data_dir)) as corpus:
        # Deletes reach the weights: whatever the corpus no longer holds taints its adapters.
        tainted, change = registry.taint_missing(corpus.sources())
        cfg.tell(change)
        init = registry.newest_untainted_ancestor(registry.active())
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
        cfg.check("training")
        closed = corpus.next_cycle() - 1  # what arrives from now on is the next cycle's
        return train_and_gate(cfg, CycleStart(
            registry=registry, corpus=corpus, init=init, since=since, closed=closed,
            base_dir=base_dir, base_hash=base_hash, tainted=tainted, t0=t0))
