"""The cycle lock: ``fcntl.flock`` on ``<data_dir>/finetune/cycle.lock`` keeps fine-tuning cycles
one at a time; the OS releases it when the process dies, so a crashed job never leaves it held."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from kinject.errors import KinjectError
from kinject.finetune.paths import finetune_dir


class JobBusy(KinjectError):
    """Another fine-tuning cycle holds the lock."""

    code = "job_busy"




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




def cycle_lock(data_dir: Path) -> CycleLock:
    """The cycle lock of ``data_dir`` (not acquired)."""
    return CycleLock(finetune_dir(data_dir) / "cycle.lock")
