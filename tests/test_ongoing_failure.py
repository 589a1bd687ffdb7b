"""OngoingFailure: what an operator reads of a failure that repeats (the scheduler's rounds,
the adapter watcher): one error while it lasts, one line when it is over."""

from __future__ import annotations

import logging

import pytest

from kinject.ongoing_failure import OngoingFailure

log = logging.getLogger("kinject.test_ongoing_failure")


def test_a_repeating_failure_is_one_error_then_one_recovery_line(
        caplog: pytest.LogCaptureFixture) -> None:
    failure = OngoingFailure(log, "the store opens again")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert failure.failed("locked", "cannot open the store (%s)", "locked")
        assert not failure.failed("locked", "cannot open the store (%s)", "locked")
        assert failure.failed("gone", "cannot open the store (%s)", "gone")  # another one
        failure.ok()
        failure.ok()
        assert failure.failed("locked", "cannot open the store (%s)", "locked")  # new again
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("ERROR", "cannot open the store (locked)"),
                     ("DEBUG", "locked (again)"),
                     ("ERROR", "cannot open the store (gone)"),
                     ("INFO", "the store opens again"),
                     ("ERROR", "cannot open the store (locked)")]


def test_without_a_recovery_line_the_end_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    failure = OngoingFailure(log)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        failure.failed("x", "failed: %s", "x")
        failure.ok()
    assert [r.levelname for r in caplog.records] == ["ERROR"] and failure.message is None
