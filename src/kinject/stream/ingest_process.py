"""``ingest_record`` in a child process, under a time budget with a hard stop.

A parser can spin for minutes on a hostile record (a page of 100,000 nested tags, thousands
of pages to OCR) and a thread cannot be stopped. So the ingest worker hands each record to
one long-lived child process and waits at most ``timeout_s`` for its answer; past that, the
child is killed (SIGKILL) and the record raises :class:`RecordTimeout`. The next record
starts a fresh child (about 0.3 s, 1 s with an OCR engine to load), outside any budget.

While it waits, the caller's ``keepalive`` runs about once a second: the ingest worker polls
its consumer there (partitions paused), so the group does not evict it during a long record.

The child ignores SIGINT and SIGTERM: Ctrl-C or a service manager's TERM reaches the whole
process group, and the parent, which finishes its batch first, decides when the child ends.
A child whose parent is gone reads end-of-file from its pipe and exits. A child that dies
while reading a record (the kernel's out-of-memory killer, a crash inside a C library) makes
that record a BadRecord naming the exit code. The child asks the kernel to pick it first
when memory runs out (``oom_score_adj`` 1000), so a hostile record costs itself, not the
worker.

A recording (kind ``audio``) can take longer than one budget to transcribe: each piece of
its transcript the child finishes renews the budget (at most once a second), so a recording
is stopped after ``timeout_s`` without progress, and its length is capped by the audio
parser (``ingest.audio_max_seconds``).

A record that names a ``uri`` (a file, a URL) is read in the child as well
(:meth:`IngestProcess.run_uri`): a server that drips a byte at a time, or a file that blocks,
is stopped at the same budget.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kinject.errors import BadRecord, KinjectError
from kinject.ingest.pipeline import IngestConfig, Ingested
from kinject.types import Record, content_hash

log = logging.getLogger(__name__)

# How often ``keepalive`` runs while a record is read.
KEEPALIVE_EVERY_S = 1.0
# How often the child may report that a long record advances (each report renews the
# record's budget: an audio recording is stopped after timeout_s without progress, and its
# length is capped by ingest.audio_max_seconds).
PROGRESS_EVERY_S = 1.0
# A child must be ready (modules imported, OCR engine loaded) within this long.
START_TIMEOUT_S = 120.0
# The kernel's out-of-memory killer picks the process with the highest score: the child,
# which reads hostile records, volunteers (1000: always first), so the worker survives.
_OOM_SCORE_ADJ = Path("/proc/self/oom_score_adj")


class RecordTimeout(BadRecord):
    """Reading a record took longer than its time budget; it was stopped."""

    code = "record_timeout"


class ChildStartError(KinjectError):
    """The child process could not be started: the installation, not a record, is at fault."""

    code = "child_start_error"


class IngestProcess:
    """One child process that runs ``ingest_record`` for records sent to it, one at a time.

    Not thread-safe: one worker thread owns it. ``close`` kills the child; ``run`` starts a
    new one when there is none.
    """

    def __init__(self, config: IngestConfig, timeout_s: float, *,
                 keepalive_every_s: float = KEEPALIVE_EVERY_S,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if keepalive_every_s <= 0:
            raise ValueError(f"keepalive_every_s must be positive, got {keepalive_every_s!r}")
        self.config = config
        self.timeout_s = timeout_s
        self.keepalive_every_s = keepalive_every_s
        self.start_timeout_s = start_timeout_s
        self.started = 0  # children started, the first one included
        self.killed = 0  # children killed at a record's time budget
        self._proc: Any = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def start(self, keepalive: Callable[[], None] | None = None) -> None:
        """Start the child unless it runs, and wait until it is ready."""
        if self._proc is not None and self._proc.is_alive():
            return
        self.close()
        ctx = multiprocessing.get_context("spawn")  # never fork a process that has threads
        parent, child = ctx.Pipe()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        proc = ctx.Process(target=_child_main, args=(child, self.config, level),
                           name="kinject-ingest-child", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.started += 1
        deadline = time.monotonic() + self.start_timeout_s
        while not parent.poll(self.keepalive_every_s):
            if not proc.is_alive() or time.monotonic() > deadline:
                code = proc.exitcode
                self.close()
                raise ChildStartError(f"the ingest child process did not start (exit code "
                                      f"{code})")
            if keepalive is not None:
                keepalive()
        try:
            parent.recv()  # "ready"
        except EOFError as exc:
            self.close()
            raise ChildStartError("the ingest child process died while starting") from exc
        log.debug("ingest child process %d ready", proc.pid)

    def run(self, record: Record, keepalive: Callable[[], None] | None = None) -> Ingested:
        """``ingest_record(record, config)`` in the child; raises what it raises, or
        RecordTimeout after ``timeout_s``. ``keepalive`` runs about once a second."""
        value = self._run((record, None), keepalive)
        assert isinstance(value, Ingested)
        return value

    def run_uri(self, record: Record, uri: str,
                keepalive: Callable[[], None] | None = None) -> tuple[Ingested, str]:
        """Read ``uri`` (under ``config.uris``) into ``record`` and ingest it, both in the
        child and within ``timeout_s``; returns what it yields and its content's hash."""
        value = self._run((record, uri), keepalive)
        ingested, digest = value
        assert isinstance(ingested, Ingested) and isinstance(digest, str)
        return ingested, digest

    def _run(self, job: tuple[Record, str | None],
             keepalive: Callable[[], None] | None) -> Any:
        self.start(keepalive)
        try:
            kind, value = self._answer(job, keepalive)
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            code = self._reap()
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            raise BadRecord(f"the ingest process died while reading the record ({why}; out "
                            "of memory?)", stage="ingest") from exc
        except BaseException:
            # Interrupted (keepalive lost the broker, ...): the child's answer to this record
            # would be read as the next record's. The next record starts a fresh child.
            self.close()
            raise
        if kind == "timeout":
            self.killed += 1
            self.close()
            raise RecordTimeout(
                f"reading the record took longer than its time budget of {self.timeout_s:g} s "
                "(KINJECT_INGEST__RECORD_TIMEOUT_S); it was stopped and is not retried",
                stage="ingest")
        if kind == "error":
            raise value
        return value

    def _answer(self, job: tuple[Record, str | None],
                keepalive: Callable[[], None] | None) -> tuple[str, Any]:
        """Send ``job``; wait for ("ok", result), ("error", exception) or ("timeout",
        None). EOFError when the child died."""
        assert self._conn is not None and self._proc is not None
        conn, proc = self._conn, self._proc
        deadline = time.monotonic() + self.timeout_s
        kept = time.monotonic()  # the last keepalive: progress must not starve it
        conn.send(job)
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return "timeout", None
            if conn.poll(min(left, max(kept + self.keepalive_every_s - now, 0.0))):
                answer: tuple[str, Any] = conn.recv()
                if answer[0] != "progress":
                    return answer
                deadline = time.monotonic() + self.timeout_s  # a recording advances
                if time.monotonic() - kept < self.keepalive_every_s:
                    continue
            elif not proc.is_alive():
                raise EOFError
            if keepalive is not None:
                keepalive()
            kept = time.monotonic()

    def _reap(self) -> int | None:
        """The dead child's exit code (negative: the signal that killed it); forgets it."""
        code = None
        if self._proc is not None:
            self._proc.join(1.0)
            code = self._proc.exitcode
        self.close()
        return int(code) if code is not None else None

    def close(self) -> None:
        """Kill the child (if any) and forget it."""
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5.0)
            proc.close()


def _child_main(conn: Connection, config: IngestConfig, log_level: str) -> None:
    """The child's loop: (Record, uri or None) in; ("ok", Ingested), ("ok", (Ingested,
    content hash)) when a uri was read, or ("error", exception) out."""
    from kinject.ingest import audio, ocr
    from kinject.ingest.envelope import read_uri
    from kinject.ingest.pipeline import ingest_record
    from kinject.logs import setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(log_level)
    _volunteer_for_oom_killer()
    if config.ocr_engine != "none":
        ocr.warm_up(config.ocr_engine)
    audio.progress_hook = _progress_sender(conn)
    conn.send(("ready", None))
    while True:
        try:
            record, uri = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        answer: tuple[str, Any]
        try:
            if uri is None:
                answer = ("ok", ingest_record(record, config))
            else:
                record = read_uri(record, uri, config.uris)
                answer = ("ok", (ingest_record(record, config), content_hash(record.content)))
        except Exception as exc:
            answer = ("error", exc)
        try:
            conn.send(answer)  # pickled whole before a byte is written
        except Exception as exc:  # an answer that does not pickle: send its words
            what = answer[1] if answer[0] == "error" else exc
            conn.send(("error", KinjectError(f"{type(what).__name__}: {what}")))


def _progress_sender(conn: Connection) -> Callable[[float, float], None]:
    """The audio parser's progress hook: ("progress", seconds done) to the parent, at most
    once every PROGRESS_EVERY_S, each renewing the record's budget there."""
    last = [time.monotonic()]

    def send(done: float, total: float) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            conn.send(("progress", done))

    return send


def _volunteer_for_oom_killer() -> None:
    """Ask the kernel to kill this process first when memory runs out (Linux; where it is
    not permitted or not there, nothing changes)."""
    try:
        _OOM_SCORE_ADJ.write_text("1000")
    except OSError as exc:
        log.debug("cannot raise the ingest child's oom_score_adj: %s", exc)
