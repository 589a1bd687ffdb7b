"""A worker's loop (stream/reconnect.py) outlives what it can recover from: the broker going
away, and, for the ingest worker, an ingest child that did not start in time on an overloaded
machine (the thread used to end there, leaving records unread until a restart)."""

from __future__ import annotations

import logging
import threading

import pytest

from kinject.stream.ingest_process import ChildStartError
from kinject.stream.reconnect import run_reconnecting


def test_a_child_that_did_not_start_is_retried_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    state = {"connected": False, "connects": 0, "steps": 0, "disconnects": 0}

    def connect() -> None:
        state["connected"], state["connects"] = True, state["connects"] + 1

    def disconnect() -> None:
        state["connected"], state["disconnects"] = False, state["disconnects"] + 1

    def step() -> None:
        state["steps"] += 1
        if state["steps"] == 1:
            raise ChildStartError("the ingest child process did not start (exit code None)")
        stop.set()  # the second step, after reconnecting, works

    with caplog.at_level(logging.ERROR, logger="kinject.stream.reconnect"):
        reconnects = run_reconnecting(
            "ingest worker", "127.0.0.1:9", stop, connected=lambda: bool(state["connected"]),
            connect=connect, step=step, disconnect=disconnect, retry_on=(ChildStartError,))
    assert reconnects == 1 and state["connects"] == 2 and state["steps"] == 2
    assert any("did not start" in r.getMessage() for r in caplog.records)


def test_an_error_not_named_still_ends_the_loop() -> None:
    def step() -> None:
        raise ChildStartError("not retried without retry_on")

    with pytest.raises(ChildStartError):
        run_reconnecting("other", "127.0.0.1:9", threading.Event(), connected=lambda: True,
                         connect=lambda: None, step=step, disconnect=lambda: None)
