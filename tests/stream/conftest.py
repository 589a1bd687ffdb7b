"""Fixtures shared by the stream tests."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import _held_records
import pytest

import kinject
from kinject.config import KafkaSettings
from kinject.stream.topics import ensure_topics


@pytest.fixture()
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """kinject's topics under a prefix of this test's own on the session broker: tests share
    the broker but not their data. Short group timings: a join takes about a second."""
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        partitions=2,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    ensure_topics(settings, kafka_bootstrap)
    return settings


@pytest.fixture()
def held_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest child processes started in this test honour the hold keys of
    ``_held_records`` in a record's meta: a record slow by construction, not by the speed of
    the machine. Their ``PYTHONPATH`` names its start-up hook and this kinject."""
    paths = [str(_held_records.SITE_DIR), str(Path(_held_records.__file__).parent),
             str(Path(kinject.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
