"""``kinject serve``: the API, the index materialiser and ingest workers in one process.

Threads, all stopped by one event (SIGINT/SIGTERM set it):

- uvicorn serving the API (in a thread, so kinject owns the signals and shuts down in order)
- the index materialiser: kinject.chunks -> this replica's index, continuously
- the corpus materialiser: kinject.chunks -> the data dir's fine-tuning corpus (consumer
  group <prefix>-corpus-<store id>, shared with every worker and scheduler writing the same
  store; off with KINJECT_FINETUNE__MATERIALISE_CORPUS=false)
- ``workers`` ingest workers in the group (0: a read replica that only materialises)
- the outbox loop: prunes what the ingest group committed and re-sends what a restarted
  broker lost, so an accepted record always reaches the log
- a warm-up that loads the generator, after which /readyz can turn ready, and then follows
  adapter changes (the ACTIVE pointer and kinject.adapters events)

With no bootstrap servers configured, the embedded broker runs for the life of the process,
restarted by a supervisor whenever it dies (/readyz says not ready meanwhile; POST
/v1/records keeps accepting into the outbox).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

from kinject.config import Settings
from kinject.errors import KinjectError
from kinject.logs import kafka_closing

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kinject.app import KinjectService

log = logging.getLogger(__name__)

OUTBOX_EVERY_S = 5.0
# After the stop grace, how much longer serve waits for threads still closing Kafka clients
# before it stops its embedded broker: a client that loses the broker under it logs ERROR
# lines and retries until the interpreter ends (an ingest worker still loading OCR models
# when the signal came, on a busy machine).
CLIENTS_CLOSE_S = 10.0


class ApiServer:
    """uvicorn on a socket bound before start (port 0 picks a free one), in a thread."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 trusted_proxies: Sequence[str] = ()) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it every keep-alive response waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise KinjectError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        # X-Forwarded-For is believed only from the configured proxies (uvicorn's default
        # trusts it from loopback, where any local process could forge a client per request).
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False,
                                timeout_graceful_shutdown=5,
                                proxy_headers=bool(trusted_proxies),
                                forwarded_allow_ips=list(trusted_proxies) or None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="kinject-api", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # handed to whoever waits on the server
            log.exception("the API server crashed")
            self.error = exc

    def start(self, timeout_s: float = 30.0) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise KinjectError(f"the API server did not start on {self.url}: {self.error}")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _forever(name: str, stop: threading.Event, body: Callable[[], None],
             backoff_s: float = 2.0) -> threading.Thread:
    """Run ``body`` in a thread until ``stop``; restart it after a failure."""

    def loop() -> None:
        while not stop.is_set():
            try:
                body()
            except Exception as exc:
                log.error("%s failed (%s); restarting in %.0f s", name, exc, backoff_s)
                stop.wait(backoff_s)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


class BackgroundThreads:
    """The threads ``kinject serve`` starts: those holding Kafka clients, which must all have
    closed them before the embedded broker stops (a client left connected logs ERROR lines
    as it loses the broker), and the warm-up, which only loads models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.clients: list[threading.Thread] = []
        self.warm_up: threading.Thread | None = None

    def add(self, thread: threading.Thread) -> None:
        self.clients.append(thread)

    def adopt(self, start: Callable[[], threading.Thread]) -> bool:
        """Start a client thread (``start`` returns it) unless shutdown has begun; False
        then: a client started now would connect to a broker that is being stopped."""
        with self._lock:
            if self._closed:
                return False
            self.clients.append(start())
            return True

    def close(self) -> list[threading.Thread]:
        """No more client threads from now on; those started so far."""
        with self._lock:
            self._closed = True
            return list(self.clients)

    def join(self, grace_s: float, extra_s: float = CLIENTS_CLOSE_S) -> None:
        """Wait for every client thread: up to ``grace_s`` for all together, then (with a
        warning naming them) up to ``extra_s`` more for those still closing, so the broker
        is stopped after its clients wherever they can close at all."""
        clients = self.close()
        deadline = time.monotonic() + grace_s
        for t in clients:
            t.join(timeout=max(deadline - time.monotonic(), 0.1))
        if late := [t.name for t in clients if t.is_alive()]:
            log.warning("still closing their Kafka clients: %s; waiting up to %.0f s more",
                        ", ".join(late), extra_s)
            deadline = time.monotonic() + extra_s
            for t in clients:
                t.join(timeout=max(deadline - time.monotonic(), 0.1))
        if self.warm_up is not None and self.warm_up.is_alive():
            log.info("stopping while the models load: their loading is abandoned")


def start_background(svc: KinjectService, settings: Settings, bootstrap: str, workers: int,
                     stop: threading.Event) -> BackgroundThreads:
    """The materialisers, the ingest workers, the outbox loop and the warm-up, as threads."""
    from kinject.finetune.jobs import deletion_hook
    from kinject.stream.corpus_runner import start_corpus_materialiser
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.runner import run_ingest_workers
    from kinject.stream.topics import Topics

    threads = BackgroundThreads()
    corpus = start_corpus_materialiser(settings, bootstrap, stop)
    # A delete taints the adapters trained on the source where it reaches the corpus. A
    # replica that keeps none (finetune.materialise_corpus off) taints its own registry's
    # copies as its index takes the delete: never served again, by name or by activation, and
    # its ACTIVE falls back even when no event from the process with the corpus reaches it.
    # It announces nothing: the process with the corpus announces the fallback.
    on_delete = deletion_hook(settings) if corpus is None else None

    def materialise() -> None:
        IndexMaterialiser(settings.kafka, bootstrap, svc.index, images=svc.images,
                          snapshot_every_s=settings.index.snapshot_every_s,
                          on_delete=on_delete).run(stop)

    threads.add(_forever("kinject-materialiser", stop, materialise))
    if corpus is not None:
        threads.add(corpus)
    if workers > 0:
        # The workers must use this broker, never start one of their own.
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        pinned = settings.model_copy(update={"kafka": kafka})
        threads.add(_forever("kinject-ingest", stop,
                             lambda: run_ingest_workers(pinned, workers, stop)))

    # A record leaves the outbox once the index and the corpus have read its chunk events:
    # an embedded broker's restart loses the events nobody has read yet.
    from kinject.stream.outbox_keeper import group_reader, index_reader

    chunks = Topics.from_settings(settings.kafka).chunks
    readers = [index_reader(svc.index, chunks)]
    if corpus is not None:
        readers.append(group_reader(settings.kafka, bootstrap, lambda: (
            corpus.materialiser.group_id if corpus.materialiser else None), chunks))
    threads.add(svc.outbox_keeper(OUTBOX_EVERY_S, readers).start(stop))

    def warm() -> None:
        try:
            svc.warm_up()
        except KinjectError as exc:
            log.error("cannot load the generator: %s; /readyz stays not ready", exc)
            return
        except Exception as exc:
            if not stop.is_set():
                raise
            # the interpreter is ending under a load (a stop before the models were ready)
            log.debug("model loading cut short by the shutdown: %s", exc)
            return
        log.info("models loaded")
        try:  # promotions load before the next request needs them
            threads.adopt(lambda: svc.follow_adapters(stop))
        except KinjectError as exc:
            log.error("cannot follow adapter changes: %s", exc)

    threads.warm_up = threading.Thread(target=warm, name="kinject-warm-up", daemon=True)
    threads.warm_up.start()
    return threads


def run_serve(settings: Settings, host: str | None = None, port: int | None = None,
              workers: int = 1, *, stop: threading.Event | None = None,
              on_ready: Callable[[str], object] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop``); then stop the API, the threads and the
    broker in that order. ``on_ready`` gets the URL once the API listens."""
    from kinject.api.app import create_app
    from kinject.app import KinjectService
    from kinject.finetune.jobs import recover_interrupted
    from kinject.stream.serve_broker import announce
    from kinject.stream.supervisor import supervised_broker
    from kinject.threads import apply_threads

    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    apply_threads(settings.models.threads)
    stop = stop or threading.Event()
    restore = stop_on_signals(stop)
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    try:
        with ExitStack() as shutdown, \
                supervised_broker(settings.kafka) as (bootstrap, supervisor), \
                ExitStack() as notes:
            if not settings.kafka.bootstrap_servers:
                log.info("embedded Kafka broker on %s (publish there, or through the API)",
                         bootstrap)
                # `kinject publish` on this data dir finds the broker through this note, from
                # the moment it runs: not only once the index and models are loaded (a minute
                # on a busy CPU, in which publish said to start the serve that was starting)
                settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                notes.enter_context(announce(settings.data_dir, bootstrap))
            svc = notes.enter_context(KinjectService(settings))
            recover_interrupted(settings.data_dir)  # jobs a killed serve left 'running'
            svc.attach(bootstrap, supervisor)
            threads = start_background(svc, settings, bootstrap, workers, stop)
            with ApiServer(create_app(svc), host, port,
                           trusted_proxies=settings.api.trusted_proxies) as server:
                log.info("kinject serving on %s (%d ingest worker(s)%s)", server.url, workers,
                         "; read replica" if workers == 0 else "")
                if on_ready is not None:
                    on_ready(server.url)
                while not stop.wait(0.5):
                    if not server.running:
                        raise KinjectError(f"the API server stopped: {server.error}")
                stop.set()
                shutdown.enter_context(kafka_closing())  # until the broker is gone
                svc.stop_finetune_jobs(0)  # cycles stop at their next step while the API ends
            deadline = time.monotonic() + settings.api.stop_grace_s
            threads.join(settings.api.stop_grace_s)
            svc.stop_finetune_jobs(max(deadline - time.monotonic(), 0.1))
            log.info("kinject serve stopped")
    finally:
        stop.set()
        restore()


def stop_on_signals(stop: threading.Event, received: list[int] | None = None
                    ) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop`` (and append their number to ``received``) instead of
    raising KeyboardInterrupt or killing the process, so a long-running command shuts down
    in order; returns what restores the previous handlers. Only from the main thread (a
    no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        if received is not None:
            received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    # `kill -USR1 <pid>` writes every thread's stack to stderr (what a stuck request waits
    # on) instead of killing the server, as in `kinject worker`.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError):  # a stderr without a file (a test's captured one)
        log.debug("no SIGUSR1 stack dump: stderr has no file descriptor")

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        faulthandler.unregister(signal.SIGUSR1)

    return restore
