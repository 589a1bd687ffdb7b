"""How far behind things are: log end offsets, the ingest and corpus groups' lag, the dlq's
size.

One long-lived client pair (a consumer in no group, an admin client) answers all of it, so
a metrics scrape or a readiness probe costs a few metadata requests, not new connections.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.stream.clients import make_admin, make_consumer
from kinject.stream.topics import Topics

log = logging.getLogger(__name__)

# How long a caller waits for another one's broker query before giving up.
_BUSY_WAIT_S = 2.0
# A full metadata request costs about 90 ms on the embedded broker, and /v1/status made four
# of them (410 ms idle). Partitions appear rarely (topics are created at start-up), so the
# metadata is refreshed at most this often, or at once when a topic is not known yet.
METADATA_EVERY_S = 10.0


class BrokerStatus:
    """Offsets of kinject's topics on one broker. Thread-safe; reconnects after a failure."""

    def __init__(self, kafka: KafkaSettings, bootstrap: str) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.topics = Topics.from_settings(kafka)
        self._lock = threading.Lock()
        self._consumer: Any = None
        self._admin: Any = None
        self._metadata_at = float("-inf")

    def _clients(self) -> tuple[Any, Any]:
        if self._consumer is None:
            self._consumer = make_consumer(self.kafka, self.bootstrap, None,
                                           request_timeout_ms=10_000)
        if self._admin is None:
            self._admin = make_admin(self.kafka, self.bootstrap, request_timeout_ms=10_000)
        return self._consumer, self._admin

    def _reset(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # closing a broken client may fail again
                    log.debug("closing a status client: %s", exc)
        self._consumer = self._admin = None
        self._metadata_at = float("-inf")

    def _offsets(self, topic: str, end: bool) -> dict[int, int]:
        from kafka import TopicPartition

        consumer, _ = self._clients()
        parts = consumer.partitions_for_topic(topic)
        if not parts or time.monotonic() - self._metadata_at > METADATA_EVERY_S:
            consumer.topics()  # refresh metadata: partitions may have been created meanwhile
            self._metadata_at = time.monotonic()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}
        got = consumer.end_offsets(tps) if end else consumer.beginning_offsets(tps)
        return {tp.partition: int(off) for tp, off in got.items()}

    def end_offsets(self, topic: str) -> dict[int, int]:
        """{partition: next offset to be written} of ``topic``."""
        return self._guard(lambda: self._offsets(topic, end=True))

    def dlq_count(self) -> int:
        """Messages now held by the dead-letter topic."""

        def count() -> int:
            ends = self._offsets(self.topics.dlq, end=True)
            begins = self._offsets(self.topics.dlq, end=False)
            return sum(max(e - begins.get(p, 0), 0) for p, e in ends.items())

        return self._guard(count)

    def ingest_lag(self) -> dict[int, int]:
        """{partition of the records topic: records the ingest group has not committed}."""
        return self.group_lag(self.topics.ingest_group, self.topics.records)

    def corpus_lag(self, store_id: str | None) -> dict[int, int]:
        """{partition of the chunks topic: chunk events the group of corpus store
        ``store_id`` has not committed}. The whole topic while no materialiser of that store
        has committed (None: there is no store yet)."""
        if store_id is None:
            return self.end_offsets(self.topics.chunks)
        return self.group_lag(self.topics.corpus_group(store_id), self.topics.chunks)

    def group_lag(self, group: str, topic: str) -> dict[int, int]:
        """{partition of ``topic``: messages consumer group ``group`` has not committed}."""

        def lag() -> dict[int, int]:
            ends = self._offsets(topic, end=True)
            _, admin = self._clients()
            got = admin.list_group_offsets(group).get(group, {})
            committed = {tp.partition: int(m.offset) for tp, m in got.items()
                         if tp.topic == topic and m.offset is not None and m.offset >= 0}
            return {p: max(e - committed.get(p, 0), 0) for p, e in ends.items()}

        return self._guard(lag)

    def _guard(self, fn: Any) -> Any:
        from kafka.errors import KafkaError

        # One caller at a time asks the broker; the others give up soon instead of piling
        # up behind a broker that does not answer (each would hold a server thread).
        if not self._lock.acquire(timeout=_BUSY_WAIT_S):
            raise BrokerError(f"the broker at {self.bootstrap} is slow to answer offsets")
        try:
            return fn()
        except (KafkaError, OSError, AssertionError) as exc:
            self._reset()
            raise BrokerError(f"cannot read offsets from {self.bootstrap}: {exc}") from exc
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._reset()
