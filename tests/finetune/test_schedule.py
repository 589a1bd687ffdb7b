"""The scheduler outlives a round that fails: `kinject finetune schedule` is a long-running
service, and a corpus briefly locked or unreadable must not end it."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from kinject.config import load_settings
from kinject.finetune import schedule


def test_a_round_that_fails_is_logged_once_and_the_scheduler_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    stop = threading.Event()
    calls: list[int] = []

    def pending(_settings: object) -> int:
        calls.append(1)
        if len(calls) <= 3:
            raise sqlite3.OperationalError("database is locked")
        if len(calls) >= 5:
            stop.set()
        return 0

    monkeypatch.setattr(schedule, "pending_examples", pending)
    with caplog.at_level(logging.DEBUG, logger="kinject.finetune.schedule"):
        ran = schedule.run_schedule(settings, stop, every_min=0, min_new=1, poll_s=0.01)
    assert ran == 0 and len(calls) >= 5  # it kept polling after the failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database is locked" in errors[0].getMessage()
