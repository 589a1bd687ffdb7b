"""Per-client limits on failed API key checks: a flood of wrong keys gets 429, not scrypt.

Each failed check costs the server a scrypt (tens of milliseconds of CPU). A client (its IP
address) may fail ``max_failures`` times within ``window_s`` seconds; after that its key
checks are refused with a ``Retry-After`` until the oldest failure leaves the window. A key
verified before (cached, no scrypt) still passes, so a client that floods does not lock out
a good key used from the same address.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

# Clients tracked at most; past this, clients whose failures all left the window are dropped.
_MAX_CLIENTS = 10_000


class FailureLimiter:
    """Sliding-window count of failed key checks per client. Thread-safe."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.max_failures = max_failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try a key again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return None
            self._expire(times, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if client not in self._failures and len(self._failures) >= _MAX_CLIENTS:
                for other in list(self._failures):
                    self._expire(self._failures[other], now)
                    if not self._failures[other]:
                        del self._failures[other]
                if len(self._failures) >= _MAX_CLIENTS:  # still full: forget the oldest
                    del self._failures[next(iter(self._failures))]
            times = self._failures.setdefault(client, deque(maxlen=self.max_failures))
            self._expire(times, now)
            times.append(now)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()
