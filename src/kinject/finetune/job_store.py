"""Durable fine-tuning job records (``<data_dir>/finetune/jobs.sqlite3``).

A record still 'running' while nobody holds the cycle lock was left by a process that died
(the lock dies with it): ``recover_interrupted`` and every cycle that takes the lock mark it
'interrupted', the status a cycle stopped by a shutdown (SIGTERM/SIGINT) records itself. An
interrupted cycle promoted nothing and needs no clean-up: the next cycle trains the same
examples, resuming from the checkpoint the stopped one left when checkpoints are on.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kinject.errors import NotFound
from kinject.finetune.cycle_lock import JobBusy, cycle_lock
from kinject.finetune.paths import finetune_dir

log = logging.getLogger(__name__)

CANCELLED = "cancelled: the server shut down"
INTERRUPTED = "interrupted: the process that ran it ended"
# The status of a job that a shutdown or a dead process stopped (not a failure of the cycle).
STATUS_INTERRUPTED = "interrupted"


@dataclass
class JobRecord:
    id: str
    kind: str = "cycle"
    status: str = "queued"  # queued, running, succeeded, skipped, failed, interrupted
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
        """A job whose process is gone cannot still be running: say it was interrupted."""
        if job.status in ("queued", "running") and job.pid is not None and not _alive(job.pid):
            job.status, job.error = STATUS_INTERRUPTED, INTERRUPTED
            job.finished_at = job.finished_at or time.time()
            self.update(job.id, status=job.status, error=job.error, finished_at=job.finished_at)
        return job


def mark_interrupted(store: JobStore, keep: str | None = None) -> list[str]:
    """Mark every 'running' job but ``keep`` interrupted and return their ids. Only
    for a caller that holds the cycle lock: a job runs only under that lock, so while this
    process holds it no other 'running' record can be alive (its pid may live on in a new
    process: a container's server is pid 1 again after a restart)."""
    ids = [job_id for job_id in store.ids_with_status("running") if job_id != keep]
    for job_id in ids:
        store.update(job_id, status=STATUS_INTERRUPTED, error=INTERRUPTED,
                     finished_at=time.time())
    if ids:
        log.warning("fine-tuning job(s) %s were left running by a process that ended: marked "
                    "interrupted", ", ".join(ids))
    return ids


def recover_interrupted(data_dir: Path) -> list[str]:
    """At start: mark the jobs a dead process left 'running' as interrupted, unless a cycle is
    running now (then the lock is held and its records are left alone)."""
    lock = cycle_lock(data_dir)
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


