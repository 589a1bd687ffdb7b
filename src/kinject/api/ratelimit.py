"""Per-client limits on failed API key checks: a flood of wrong keys gets 429, not scrypt.

Each failed check costs the server a scrypt (tens of milliseconds of CPU). A client (its IP
address; for IPv6 its /64, which one host holds whole) may fail ``max_failures`` times within
``window_s`` seconds; after that its key checks are refused with a ``Retry-After`` until the
oldest failure leaves the window. A check takes its failure slot *before* the scrypt and
gives it back when the key is good, so a burst of concurrent wrong keys cannot all pass the
limit while none has failed yet. A key verified before (cached, no scrypt) is never limited,
so a client that floods does not lock out a good key used from the same address.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

# Clients tracked at most; past this, clients whose failures all left the window are dropped.
_MAX_CLIENTS = 10_000


def client_key(host: str) -> str:
    """Who a client is for the limiter: its IPv4 address, or its IPv6 /64 (a host gets a
    whole /64 and can rotate through it at will); any other name as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Slot:
    """A failure slot a key check holds (see :meth:`FailureLimiter.reserve`)."""

    client: str
    at: float


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

    def reserve(self, client: str) -> Slot | None:
        """Take one of ``client``'s failure slots before checking its key: it counts as a
        failure until :meth:`release`. None when the client has none left (then
        :meth:`retry_after` says for how long)."""
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
            if len(times) >= self.max_failures:
                return None
            times.append(now)
            return Slot(client, now)

    def release(self, slot: Slot) -> None:
        """Give a slot back: the key it was taken for was good."""
        with self._lock:
            times = self._failures.get(slot.client)
            if times is not None and slot.at in times:
                times.remove(slot.at)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()
