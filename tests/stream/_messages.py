"""Reading a topic back in a stream test: ``from _messages import read_json, read_topic``."""

from __future__ import annotations

import json
import time
from typing import Any

from kinject.config import KafkaSettings
from kinject.stream.clients import make_consumer


def read_topic(kafka: KafkaSettings, bootstrap: str, topic: str, n: int,
               timeout_s: float = 20.0) -> list[Any]:
    """The messages of ``topic`` from its start: ``n`` of them, or fewer once ``timeout_s``
    has passed, plus what one more short poll finds, so that a message beyond the ``n``
    expected shows in the count the caller checks."""
    consumer = make_consumer(kafka, bootstrap, None, [topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(batch)
        for batch in consumer.poll(timeout_ms=300).values():  # nothing more than n
            got.extend(batch)
    finally:
        consumer.close()
    return got


def read_json(kafka: KafkaSettings, bootstrap: str, topic: str, n: int,
              timeout_s: float = 20.0) -> list[Any]:
    """:func:`read_topic`, each message's value parsed as JSON."""
    return [json.loads(m.value) for m in read_topic(kafka, bootstrap, topic, n, timeout_s)]
