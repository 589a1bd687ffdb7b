"""Fixtures shared by the stream tests."""

from __future__ import annotations

import uuid

import pytest

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
