"""Keeps the embedded broker alive: restarts Tansu on the same port when it dies.

``kinject serve`` with no bootstrap servers runs Tansu as a child process. If it dies
(killed, crashed, out of memory), nothing else would bring it back and every part of kinject
that talks to Kafka would wait forever. The supervisor notices within ``check_every_s``,
waits a growing backoff (a broker that dies at once again must not spin) and starts it on
the port it had, so every client reconnects to the same address. The log was in memory:
the broker comes back as a new, empty cluster; the outbox re-sends what it lost and the
consumers re-read from the start (see :mod:`kinject.stream.reconnect`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.stream.broker import EmbeddedBroker, connect

log = logging.getLogger(__name__)


class BrokerSupervisor:
    """Restarts one :class:`EmbeddedBroker` whenever it is found dead."""

    def __init__(self, broker: EmbeddedBroker, *, check_every_s: float = 0.5,
                 first_backoff_s: float = 1.0, max_backoff_s: float = 10.0) -> None:
        if check_every_s <= 0:
            raise ValueError(f"check_every_s must be positive, got {check_every_s!r}")
        if not 0 < first_backoff_s <= max_backoff_s:
            raise ValueError(f"need 0 < first_backoff_s ({first_backoff_s!r}) <= "
                             f"max_backoff_s ({max_backoff_s!r})")
        self.broker = broker
        self.check_every_s = check_every_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self.broker.running

    def on_restart(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick, non-blocking) after each successful restart."""
        self._callbacks.append(callback)

    def state(self) -> dict[str, Any]:
        """For /readyz: whether the broker runs, how often it was restarted, the last error."""
        out: dict[str, Any] = {"embedded": True, "running": self.running,
                               "restarts": self.restarts}
        if self.down_since is not None:
            out["down_s"] = round(time.monotonic() - self.down_since, 1)
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def run(self, stop: threading.Event) -> None:
        backoff = self.first_backoff_s
        while not stop.wait(self.check_every_s):
            if self.broker.running:
                continue
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.error("the embedded Kafka broker died (exit code %s); restarting it on "
                          "the same port in %.1f s", self.broker.returncode, backoff)
            if stop.wait(backoff):
                return
            try:
                self.broker.restart()
            except BrokerError as exc:
                self.last_error = str(exc)
                backoff = min(backoff * 2, self.max_backoff_s)
                log.error("cannot restart the embedded broker (%s); next try in %.1f s",
                          exc, backoff)
                continue
            except Exception as exc:  # never end supervision (an OSError of Popen, a bug)
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(backoff * 2, self.max_backoff_s)
                log.exception("cannot restart the embedded broker; next try in %.1f s",
                              backoff)
                continue
            self.restarts += 1
            self.down_since = None
            self.last_error = None
            backoff = self.first_backoff_s
            log.warning("embedded Kafka broker restarted on %s (restart %d; a new, empty "
                        "cluster: accepted records are re-sent)", self.broker.bootstrap_servers,
                        self.restarts)
            for callback in self._callbacks:
                try:
                    callback()
                except Exception:  # one listener must not stop the supervision
                    log.exception("a broker-restart callback failed")

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="kinject-broker-supervisor",
                                  daemon=True)
        thread.start()
        return thread


@contextmanager
def supervised_broker(kafka: KafkaSettings, *, timeout_s: float = 30.0
                      ) -> Iterator[tuple[str, BrokerSupervisor | None]]:
    """Like :func:`~kinject.stream.broker.connect`, and with an embedded broker also a
    supervisor that restarts it; yields (bootstrap servers, supervisor or None)."""
    if kafka.bootstrap_servers:
        with connect(kafka, timeout_s=timeout_s) as bootstrap:
            yield bootstrap, None
        return
    with EmbeddedBroker(kafka, startup_timeout_s=timeout_s) as broker:
        supervisor = BrokerSupervisor(broker)
        stop = threading.Event()
        thread = supervisor.start(stop)
        try:
            yield broker.bootstrap_servers, supervisor
        finally:  # never restart a broker that is being stopped
            stop.set()
            thread.join(timeout=timeout_s)
