"""Dynamic batching: calls that arrive within a short window run as one batch.

The first caller of a window becomes its leader: it waits ``window_ms`` for others (and, when
a batch is running, until it ends), then runs the batch function over every item gathered, at
most ``max_batch`` a call, and hands each caller its own result. With ``window_ms=0`` every
call runs alone, at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Slot(Generic[In, Out]):
    item: In
    done: threading.Event = field(default_factory=threading.Event)
    result: Out | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[In, Out]):
    """``submit(item)`` blocks until ``run_batch([... item ...])`` has produced its result."""

    def __init__(self, run_batch: Callable[[Sequence[In]], Sequence[Out]], window_ms: float = 5.0,
                 max_batch: int = 16) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Slot[In, Out]] = []
        self._full = threading.Event()
        # Batches run one at a time: the model is one, and two batches at once only thrash.
        self._run_lock = threading.Lock()
        self.batches = 0
        self.items = 0

    def submit(self, item: In) -> Out:
        if self.window_s == 0:
            return self._run([_Slot(item)])[0]
        slot: _Slot[In, Out] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            leader = len(self._pending) == 1
            if len(self._pending) >= self.max_batch:
                self._full.set()
        if leader:
            self._full.wait(self.window_s)
            # The batch is taken only once the model is free: whoever arrives while the batch
            # before runs joins this one, instead of forming small batches that queue.
            with self._run_lock:
                with self._lock:
                    batch, self._pending = self._pending, []
                    self._full.clear()
                self._run_locked(batch)
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[In, Out]]) -> list[Out]:
        with self._run_lock:
            return self._run_locked(batch)

    def _run_locked(self, batch: list[_Slot[In, Out]]) -> list[Out]:
        try:
            results: list[Out] = []
            for at in range(0, len(batch), self.max_batch):  # at most max_batch per call
                part = batch[at:at + self.max_batch]
                self.batches += 1
                self.items += len(part)
                results += list(self.run_batch([s.item for s in part]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for "
                                   f"{len(batch)} items")
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except BaseException as exc:
            for s in batch:
                s.error = exc
            if len(batch) == 1 and self.window_s == 0:
                raise
        finally:
            for s in batch:
                s.done.set()
        return [s.result for s in batch]  # type: ignore[misc]
