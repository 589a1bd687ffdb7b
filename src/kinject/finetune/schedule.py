"""The scheduler: fine-tuning cycles on a timer and/or on volume."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kinject.config import Settings
from kinject.errors import Cancelled
from kinject.finetune.cycle import run_cycle
from kinject.finetune.cycle_lock import JobBusy
from kinject.finetune.job_store import JobRecord, JobStore
from kinject.finetune.paths import corpus_path
from kinject.ongoing_failure import OngoingFailure

if TYPE_CHECKING:
    from kinject.finetune.announce import Announce

log = logging.getLogger(__name__)


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
                 poll_s: float | None = None, announce: Announce | None = None) -> int:
    """Run cycles until ``stop`` is set: every ``every_min`` minutes when anything new
    arrived, and as soon as ``min_new`` new examples are waiting. Returns cycles run. A
    cycle running when ``stop`` is set ends at its next training step (run_cycle).
    ``announce``: see run_cycle."""
    every = settings.schedule.every_min if every_min is None else every_min
    volume = settings.schedule.min_new if min_new is None else min_new
    poll = settings.schedule.poll_s if poll_s is None else poll_s
    if every <= 0 and volume <= 0:
        raise ValueError("give --every MIN and/or --min-new N (both are off)")
    store = JobStore.for_data_dir(settings.data_dir)
    last, ran = time.monotonic(), 0
    failing = OngoingFailure(log, "scheduler: rounds run again")
    try:
        while not stop.is_set():
            try:
                waiting = pending_examples(settings)
                due = every > 0 and time.monotonic() - last >= every * 60
                if waiting and ((volume > 0 and waiting >= volume) or due):
                    trigger = "volume" if volume > 0 and waiting >= volume else "timer"
                    ran += _scheduled_cycle(settings, store, trigger, stop, announce, on_result)
                    last = time.monotonic()
                elif due:
                    last = time.monotonic()
            except Exception as exc:  # a locked or briefly unreadable store: the next round
                message = f"{type(exc).__name__}: {exc}"
                failing.failed(message, "scheduler: a round failed (%s); trying again every "
                               "%g s", message, poll)
            else:
                failing.ok()
            stop.wait(poll)
    finally:
        store.close()
    return ran


def _scheduled_cycle(settings: Settings, store: JobStore, trigger: str, stop: threading.Event,
                     announce: Announce | None,
                     on_result: Callable[[JobRecord], None] | None) -> int:
    """One cycle as a job; 1 when it ran (whatever its outcome), 0 when another held the lock."""
    job = store.create("cycle", params={"trigger": trigger})
    try:
        run_cycle(settings, store=store, job_id=job.id, announce=announce, stop=stop)
    except Cancelled:  # the job says interrupted; the loop ends on ``stop``
        log.info("scheduled cycle interrupted by the shutdown")
    except JobBusy:
        log.info("a cycle is running elsewhere; trying again later")
        return 0
    except Exception as exc:
        log.error("scheduled cycle failed: %s", exc)
    if on_result is not None:
        on_result(store.get(job.id))
    return 1
