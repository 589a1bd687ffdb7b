"""kinject's Kafka topics: their names, and creating them where they are missing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kinject.config import KafkaSettings
from kinject.errors import BrokerError

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

_log = logging.getLogger(__name__)

# CreateTopics error code for a topic that exists already (another worker won the race).
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class Topics:
    """The four topic names, all under one prefix (``kinject.records`` by default), the
    ingest workers' consumer group (``kinject-ingest``) and the corpus materialisers' ones
    (:meth:`corpus_group`): two deployments that share a Kafka cluster under different
    prefixes never share a group."""

    records: str
    chunks: str
    dlq: str
    adapters: str
    ingest_group: str
    prefix: str

    @classmethod
    def from_prefix(cls, prefix: str) -> Topics:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"topic prefix must be non-empty without spaces, got {prefix!r}")
        return cls(
            records=f"{prefix}.records",
            chunks=f"{prefix}.chunks",
            dlq=f"{prefix}.dlq",
            adapters=f"{prefix}.adapters",
            ingest_group=f"{prefix}-ingest",
            prefix=prefix,
        )

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> Topics:
        return cls.from_prefix(kafka.topic_prefix)

    def corpus_group(self, store_id: str) -> str:
        """The consumer group of the materialisers that fill the corpus store ``store_id``
        (``<prefix>-corpus-<store id>``): processes sharing one store share the work, and
        each distinct store (another data dir, another host) reads every event."""
        if not store_id or any(c.isspace() for c in store_id):
            raise ValueError(f"a corpus store id must be non-empty without spaces, "
                             f"got {store_id!r}")
        return f"{self.prefix}-corpus-{store_id}"

    def all(self) -> tuple[str, ...]:
        return (self.records, self.chunks, self.dlq, self.adapters)

    def partitions(self, kafka: KafkaSettings) -> dict[str, int]:
        """Partitions per topic: the adapters topic has one, so every replica sees
        promotions in the order they happened."""
        return {name: 1 if name == self.adapters else kafka.partitions for name in self.all()}


def ensure_topics(kafka: KafkaSettings, bootstrap: str, timeout_s: float = 30.0) -> Topics:
    """Create kinject's topics where missing and wait until metadata shows them with leaders.

    Idempotent: existing topics are left as they are (a partition count that differs from
    the settings is logged, not changed). Raises BrokerError when the broker cannot be
    reached or refuses to create a topic.
    """
    from kafka.errors import KafkaError

    from kinject.stream.clients import make_admin

    topics = Topics.from_settings(kafka)
    wanted = topics.partitions(kafka)
    deadline = time.monotonic() + timeout_s
    try:
        admin = make_admin(kafka, bootstrap, bootstrap_timeout_ms=_ms(timeout_s))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in wanted.items() if name not in existing}
        if missing:
            _create(admin, kafka, missing, bootstrap)
        remaining = max(deadline - time.monotonic(), 0.5)
        admin.wait_for_topics(list(wanted), timeout_ms=_ms(remaining))
        for info in admin.describe_topics(list(wanted)):
            name, have = info["name"], len(info.get("partitions") or [])
            if name not in missing and have != wanted[name]:
                _log.warning(
                    "topic %s has %d partitions where the settings ask for %d; left as it is",
                    name,
                    have,
                    wanted[name],
                )
    except KafkaError as exc:
        raise BrokerError(f"cannot set up kinject's topics on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    return topics


def _create(
    admin: KafkaAdminClient, kafka: KafkaSettings, missing: dict[str, int], bootstrap: str
) -> None:
    spec = {
        name: {"num_partitions": n, "replication_factor": kafka.replication_factor}
        for name, n in missing.items()
    }
    response = admin.create_topics(spec, raise_errors=False)
    for result in response["topics"]:
        code = result.get("error_code", 0)
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            message = result.get("error_message") or f"error code {code}"
            raise BrokerError(
                f"broker {bootstrap} refused to create topic {result['name']}: {message}"
            )
    _log.info("created topics %s on %s", ", ".join(sorted(missing)), bootstrap)


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
