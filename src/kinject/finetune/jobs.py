"""Fine-tuning jobs in the background: ``start_job`` runs one cycle (finetune/cycle.py) in a
thread under the cycle lock, and ``JobThreads`` is what a server keeps of the cycles it
started, to stop and wait for them when it shuts down.

The parts live in their own modules: the lock (cycle_lock.py), the job records
(job_store.py), one cycle (cycle.py, cycle_stages.py) and the scheduler (schedule.py); the
names below are re-exported so ``kinject.finetune.jobs`` stays the one import for callers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.finetune.cycle import (
    CycleConfig,
    CycleResult,
    CycleStart,
    Progress,
    base_model_dir,
    base_model_hash,
    run_cycle,
)
from kinject.finetune.cycle_lock import CycleLock, JobBusy, cycle_lock
from kinject.finetune.job_store import (
    CANCELLED,
    INTERRUPTED,
    STATUS_INTERRUPTED,
    JobRecord,
    JobStore,
    mark_interrupted,
    recover_interrupted,
)
from kinject.finetune.paths import CORPUS_FILE, corpus_path, finetune_dir
from kinject.finetune.schedule import pending_examples, run_schedule

if TYPE_CHECKING:
    from kinject.finetune.announce import Announce

__all__ = [
    "CANCELLED", "CORPUS_FILE", "INTERRUPTED", "STATUS_INTERRUPTED", "CycleConfig",
    "CycleLock", "CycleResult", "CycleStart", "JobBusy", "JobRecord", "JobStore", "JobThreads",
    "Progress",
    "base_model_dir", "base_model_hash", "corpus_path", "cycle_lock", "deletion_hook",
    "finetune_dir", "mark_interrupted", "pending_examples", "recover_interrupted", "run_cycle",
    "run_schedule", "start_job",
]

log = logging.getLogger(__name__)


def deletion_hook(settings: Settings, *, announce: Announce | None = None
                  ) -> Callable[[str], list[str]]:
    """For the corpus materialiser's ``on_delete``: taint every adapter trained on the
    deleted source; when the serving one is among them, ACTIVE falls back to its newest
    untainted promoted ancestor (or the base) and ``announce`` tells the other replicas."""
    from kinject.finetune.cycle import CycleConfig
    from kinject.finetune.registry import AdapterRegistry

    registry = AdapterRegistry.for_data_dir(settings.data_dir)
    tell = CycleConfig(settings, announce=announce).tell

    def on_delete(source_id: str) -> list[str]:
        tainted, change = registry.taint_source(source_id)
        tell(change)
        return tainted

    return on_delete


def start_job(settings: Settings, store: JobStore | None = None, *,
              stop: threading.Event | None = None, announce: Announce | None = None,
              **kwargs: Any) -> JobRecord:
    """Record a job and run the cycle in a background thread; returns the queued record.

    Raises JobBusy at once when another cycle holds the lock. The lock is taken here and
    handed to the thread, so of two requests that arrive together one gets JobBusy rather
    than a job that fails later. The thread writes to its own connection of the job store,
    so ``store`` may be closed when this returns. ``stop``: see run_cycle; JobThreads keeps
    the thread as well, for a server to wait on. ``announce``: see run_cycle.
    """
    return _launch(settings, store, stop, announce, kwargs)[0]


def _launch(settings: Settings, store: JobStore | None, stop: threading.Event | None,
            announce: Announce | None, kwargs: dict[str, Any]
            ) -> tuple[JobRecord, threading.Thread]:
    lock = cycle_lock(settings.data_dir)
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
            run_cycle(settings, job_id=job.id, lock=lock, stop=stop, announce=announce,
                      **kwargs)
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

    def start(self, settings: Settings, *, announce: Announce | None = None,
              **kwargs: Any) -> JobRecord:
        """start_job with this owner's stop event; JobBusy once stopping."""
        with self._lock:
            if self.stopping.is_set():
                raise JobBusy("the server is shutting down: no new fine-tuning cycle starts")
            job, thread = _launch(settings, None, self.stopping, announce, kwargs)
            self._threads = {k: v for k, v in self._threads.items() if v[0].is_alive()}
            self._threads[job.id] = (thread, Path(settings.data_dir))
        return job

    def stop(self, timeout_s: float) -> list[str]:
        """Cancel every cycle and wait up to ``timeout_s`` in all; returns the ids of the jobs
        still running then. Their records say interrupted (CANCELLED) at once: the process is
        about to end under them (and the OS to free their lock); one that ends after all
        writes its own. A later call does not wait for them again (the service's close()
        follows serve's own stop, and a shutdown must fit the orchestrator's grace period)."""
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
                    store.update(job_id, status=STATUS_INTERRUPTED, finished_at=time.time(),
                                 error=f"{CANCELLED} (it did not stop in time)")
                finally:
                    store.close()
            with self._lock:
                for job_id in left:
                    self._threads.pop(job_id, None)
        return list(left)
