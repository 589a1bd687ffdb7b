"""The broker figures behind /v1/status, /v1/dlq, /readyz and /metrics: right, and cheap."""

from __future__ import annotations

from typing import Any

import pytest

from kinject.config import KafkaSettings
from kinject.stream.clients import make_producer
from kinject.stream.lag import BrokerStatus
from kinject.stream.topics import Topics

pytestmark = pytest.mark.kafka


def test_figures_are_right_and_need_no_metadata_request_each(
        kafka: KafkaSettings, kafka_bootstrap: str) -> None:
    """A full metadata request cost about 90 ms on the embedded broker and /v1/status made
    four: 410 ms for an idle page. Now repeated figures reuse the metadata."""
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, kafka_bootstrap)
    for n in range(3):  # one batch each: Tansu reports the end of a batch of several short
        producer.send(topics.dlq, key=b"k", value=b"{}", partition=n % 2)
        producer.flush()
    producer.send(topics.records, key=b"r", value=b"{}", partition=0)
    producer.flush()
    producer.close()
    status = BrokerStatus(kafka, kafka_bootstrap)
    try:
        assert status.dlq_count() == 3
        assert status.ingest_lag() == {0: 1, 1: 0}
        refreshes: list[Any] = []
        consumer, _ = status._clients()
        real = consumer.topics
        consumer.topics = lambda: refreshes.append(1) or real()
        for _ in range(20):
            status.dlq_count()
            status.ingest_lag()
            status.end_offsets(topics.chunks)
        assert len(refreshes) <= 1
    finally:
        status.close()


def test_a_topic_created_later_is_seen_at_once(kafka: KafkaSettings,
                                               kafka_bootstrap: str) -> None:
    from kafka.admin import NewTopic

    from kinject.stream.clients import make_admin

    status = BrokerStatus(kafka, kafka_bootstrap)
    late = f"{kafka.topic_prefix}.late"
    try:
        assert status.end_offsets(late) == {}
        admin = make_admin(kafka, kafka_bootstrap)
        admin.create_topics([NewTopic(late, 2, 1)])
        admin.close()
        producer = make_producer(kafka, kafka_bootstrap)
        producer.send(late, value=b"x", partition=1)
        producer.flush()
        producer.close()
        assert status.end_offsets(late) == {0: 0, 1: 1}
    finally:
        status.close()
