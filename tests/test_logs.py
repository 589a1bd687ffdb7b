"""What `kinject serve` and the CLI print on stderr."""

from __future__ import annotations

import subprocess
import sys


def test_kafka_clients_routine_slow_step_warnings_are_not_printed() -> None:
    # kafka-python's I/O loop warned on every step over 0.1 s: on a busy CPU `kinject serve`
    # printed a hundred "Task ... ran for 0.271s (>0.100s threshold). It is blocking the
    # event loop ..." lines in eight minutes, burying its own
    code = ("import logging; from kinject.logs import setup_logging; setup_logging('INFO');"
            "log = logging.getLogger('kafka.net.selector');"
            "log.warning('Task %r ran for 0.271s (>0.100s threshold). It is blocking the event "
            "loop -- likely a tight sync loop inside a coroutine. Other pollers will time out.'"
            " % 'task');"
            "log.warning('Wakeup socket returned empty. Rebuilding.')")
    stderr = _stderr_of(code)
    assert "threshold" not in stderr
    assert "Wakeup socket returned empty" in stderr  # its other warnings still show


def test_a_metadata_refresh_cancelled_by_closing_its_client_is_not_an_error() -> None:
    # kafka-python logs ERROR when a client kinject closes (a shutdown, a reconnect) still had
    # a metadata request in flight: `kinject serve` ended a clean SIGTERM on that line
    code = ("import logging; from kafka import errors; from kinject.logs import setup_logging;"
            "setup_logging('INFO'); log = logging.getLogger('kafka.cluster');"
            "log.error('Metadata refresh: failed %s', errors.Cancelled());"
            "log.error('Metadata refresh: failed %s', errors.KafkaConnectionError('refused'))")
    stderr = _stderr_of(code)
    assert "Cancelled" not in stderr
    assert "Metadata refresh: failed KafkaConnectionError" in stderr  # a real failure


def test_a_refresh_cut_off_by_a_shutdown_is_not_an_error_but_the_same_while_running_is() -> None:
    # CI saw a clean SIGTERM of `kinject serve` end on "Metadata refresh: failed Transport closed
    # for writes": the close of a client shut the socket under its in-flight refresh
    code = ("import logging; from kinject.logs import setup_logging, kafka_closing;"
            "setup_logging('INFO'); log = logging.getLogger('kafka.cluster');"
            "log.error('Metadata refresh: failed %s', RuntimeError('Transport closed for writes'));"
            "cm = kafka_closing(); cm.__enter__();"
            "log.error('Metadata refresh: failed %s', RuntimeError('Transport closed for writes "
            "(shutdown)'));"
            "log.error('Metadata refresh: failed %s', ValueError('broken'))")
    stderr = _stderr_of(code)
    assert "Transport closed for writes\n" in stderr  # while running: the peer shut it
    assert "(shutdown)" not in stderr
    assert "Metadata refresh: failed broken" in stderr  # another failure still shows


def _stderr_of(code: str) -> str:
    """What a fresh interpreter running ``code`` logs (logging set up as the CLI does)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stderr
