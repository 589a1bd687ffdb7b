"""A background rebuild that searches never wait for.

An index whose structure cannot be changed in place (HNSW, a bm25s base) is rebuilt from
its durable source in a background thread while searches go on against the old one. The
changes applied meanwhile are journalled (each one a call that applies it again) and
replayed onto the new index under the owner's lock, right before it is swapped in (one
reference assignment), so nothing applied during the rebuild is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

Built = TypeVar("Built")


class BackgroundRebuild(Generic[Built]):
    """Runs ``build`` (outside the lock) in a thread, then ``install`` and the journal's
    replays under ``lock``. ``install`` returns what to log about the new index."""

    def __init__(self, lock: threading.RLock, *, name: str, what: str, logger: logging.Logger,
                 build: Callable[[], Built], install: Callable[[Built], str]) -> None:
        self._lock, self._name, self._what, self._log = lock, name, what, logger
        self._build, self._install = build, install
        self._journal: list[Callable[[], object]] | None = None
        self._thread: threading.Thread | None = None

    def record(self, change: Callable[[], object]) -> None:
        """Call under the lock with each change as it is applied: replayed onto the index a
        running rebuild makes."""
        if self._journal is not None:
            self._journal.append(change)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> threading.Thread | None:
        """Start a rebuild in a daemon thread unless one is running (then None)."""
        with self._lock:
            if self.running:
                return None
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            return self._thread

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running rebuild (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            self._journal = []  # changes from now on are replayed onto the new index
        try:
            built = self._build()
        except Exception:
            self._log.exception("%s rebuild failed; searching the previous index", self._what)
            with self._lock:
                self._journal = None
            return
        with self._lock:
            journal, self._journal = self._journal or [], None
            done = self._install(built)
            for change in journal:
                change()
        self._log.info("%s in %.2f s (%d changes replayed)", done, time.perf_counter() - t0,
                       len(journal))
