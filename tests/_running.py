"""Loops of kinject's stream parts (an ingest worker's or a materialiser's ``run(stop)``) in
daemon threads for a test: ``from _running import Running``.

    with Running(worker.run, mat.run):
        ...  # both run here; stopped and joined on leaving the block
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType


class Running:
    """Starts each loop at once in a daemon thread with a shared stop event."""

    def __init__(self, *loops: Callable[[threading.Event], object]) -> None:
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=loop, args=(self.stop_event,), daemon=True)
                        for loop in loops]
        for thread in self.threads:
            thread.start()

    def stop(self, join_s: float = 10.0) -> None:
        """Set the stop event and wait (``join_s`` each at most) for the loops to return."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=join_s)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
