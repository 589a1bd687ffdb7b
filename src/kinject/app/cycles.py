"""Fine-tuning cycles run in the caller's process (``kinject finetune run`` and
``schedule``), wired as a cycle needs: each change of the serving adapter announced on the
configured broker (kafka_announcer), and the corpus filled from it meanwhile by a schedule
(corpus_materialiser). The facade's Adapters part runs cycles in the background instead."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kinject.config import Settings

if TYPE_CHECKING:
    from kinject.finetune.cycle import CycleResult, Progress
    from kinject.finetune.job_store import JobRecord


def run_cycle_now(settings: Settings, *, trigger: str = "cli", progress: Progress | None = None,
                  stop: threading.Event | None = None) -> tuple[JobRecord, CycleResult]:
    """Run one cycle now as a new job (``trigger`` in its params); returns the job and the
    cycle's result. Raises JobBusy when another cycle runs, Cancelled when ``stop`` is set
    mid-cycle (the job is recorded interrupted)."""
    from kinject.finetune.jobs import JobStore, run_cycle
    from kinject.stream.adapter_events import kafka_announcer

    store = JobStore.for_data_dir(settings.data_dir)
    job = store.create(params={"trigger": trigger})
    try:
        result = run_cycle(settings, store=store, job_id=job.id, progress=progress,
                           announce=kafka_announcer(settings), stop=stop)
    finally:  # Cancelled (a signal) and failures too
        store.close()
    return job, result


def run_cycles_on_schedule(settings: Settings, stop: threading.Event, *,
                           every_min: float | None = None, min_new: int | None = None,
                           on_result: Callable[[JobRecord], None] | None = None) -> int:
    """Run cycles on a timer and/or on volume until ``stop`` is set (see
    finetune.schedule.run_schedule), filling the corpus from the configured broker
    meanwhile; returns how many ran."""
    from kinject.finetune.jobs import run_schedule
    from kinject.stream.adapter_events import kafka_announcer
    from kinject.stream.corpus_runner import corpus_materialiser

    with corpus_materialiser(settings):
        return run_schedule(settings, stop, every_min=every_min, min_new=min_new,
                            on_result=on_result, announce=kafka_announcer(settings))


def recent_jobs(data_dir: Path, limit: int = 20) -> list[JobRecord]:
    """The latest ``limit`` fine-tuning jobs of ``data_dir``, newest first."""
    from kinject.finetune.jobs import JobStore

    store = JobStore.for_data_dir(data_dir)
    jobs = store.recent(limit)
    store.close()
    return jobs
