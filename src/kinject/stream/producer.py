"""kinject's producer: records onto ``kinject.records``, keyed by source id, through the outbox.

The key is the source id, so every record of a source lands on one partition and keeps its
order. Deletes are ``op=delete`` envelopes (not Kafka tombstones), so their reason and
timestamp travel with them. With an :class:`~kinject.stream.outbox.Outbox`, a record is
durable once ``publish`` returns (written and fsynced locally, sent in the background and
acknowledged by ``flush``); without one, ``publish`` waits for the broker's acknowledgement.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kinject.config import KafkaSettings
from kinject.errors import BadRecord, BrokerError
from kinject.ingest.envelope import encode_record, record_from_path
from kinject.stream.clients import ClusterWatch, make_producer
from kinject.stream.topics import Topics
from kinject.types import Record

if TYPE_CHECKING:
    from kinject.stream.outbox import Outbox, OutboxEntry

_log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 10 * 1024 * 1024
# Room for the record batch header and the key around the largest value allowed.
_REQUEST_OVERHEAD = 64 * 1024
# Sends waiting for their acknowledgement before publish() drains them.
_MAX_IN_FLIGHT = 1000


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB ({n:,} bytes)" if n >= 1024 * 1024 else f"{n:,} bytes"


def encode_message(record: Record, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
                   ) -> tuple[bytes, bytes]:
    """(key, value) of a record on the records topic, stamped with the time if it has none.

    Raises BadRecord when the encoded record is over ``max_record_bytes``.
    """
    if record.ts is None:
        record = dataclasses.replace(record, ts=time.time())
    value = encode_record(record)
    if len(value) > max_record_bytes:
        raise BadRecord(
            f"record {record.source_id!r} is {_size(len(value))} encoded "
            f"({_size(len(record.content))} of content), over the limit of "
            f"{_size(max_record_bytes)}; it was not published",
            stage="publish",
        )
    return record.source_id.encode("utf-8"), value


class Producer:
    """Publishes records to ``<prefix>.records``. Use as a context manager."""

    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap: str,
        outbox: Outbox | None = None,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        ack_timeout_s: float = 30.0,
    ) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
        if ack_timeout_s <= 0:
            raise ValueError(f"ack_timeout_s must be positive, got {ack_timeout_s}")
        from kafka.errors import KafkaError

        self.kafka = kafka
        self.bootstrap = bootstrap
        self.outbox = outbox
        self.max_record_bytes = max_record_bytes
        self.topic = Topics.from_settings(kafka).records
        self._ack_timeout_s = ack_timeout_s
        self._in_flight: list[tuple[int, Any]] = []
        self.cluster_id: str | None = None
        try:
            self.cluster_id = self._ask_cluster_id()
        except KafkaError as exc:
            raise BrokerError(f"cannot connect a producer to {bootstrap}: {exc}") from exc
        self._producer = self._new_client()

    def _ask_cluster_id(self) -> str | None:
        watch = ClusterWatch(self.kafka, self.bootstrap)
        try:
            return watch.cluster_id()
        finally:
            watch.close()

    def refresh_cluster_id(self) -> bool:
        """Ask the broker which cluster it is now; True when that changed (a restarted
        embedded broker is a new, empty cluster: the outbox must re-send to it).

        Sends still in flight are settled first and recorded under the old id, so a record
        the old cluster acknowledged is never taken for one the new cluster holds.
        """
        from kafka.errors import KafkaError

        try:
            self.flush()
        except BrokerError as exc:  # the rows stay 'accepted' and are re-sent
            _log.info("sends before the cluster check failed: %s", exc)
        try:
            current = self._ask_cluster_id()
        except KafkaError as exc:
            raise BrokerError(f"cannot ask {self.bootstrap} for its cluster id: {exc}") from exc
        changed = current != self.cluster_id
        if changed:
            _log.warning("Kafka at %s is a new cluster (%s -> %s)", self.bootstrap,
                         self.cluster_id, current)
            self.cluster_id = current
            # An idempotent producer's id and sequence numbers belong to the old cluster;
            # the new one refuses them (a fatal error), so start a fresh client.
            old, self._producer = self._producer, self._new_client()
            try:
                old.close(timeout=1)
            except Exception as exc:
                _log.debug("closing the old producer: %s", exc)
        return changed

    def _new_client(self) -> Any:
        from kafka.errors import KafkaError

        try:
            # max_block_ms: a send waits this long for metadata when the broker is gone
            # (kafka-python's default is 60 s); the record stays in the outbox meanwhile.
            return make_producer(self.kafka, self.bootstrap,
                                 max_request_size=self.max_record_bytes + _REQUEST_OVERHEAD,
                                 max_block_ms=int(min(self._ack_timeout_s, 10.0) * 1000))
        except KafkaError as exc:
            raise BrokerError(f"cannot connect a producer to {self.bootstrap}: {exc}") from exc

    def publish(self, record: Record) -> str:
        """Publish one record; return its id (``outbox:<row>`` or ``topic/partition/offset``).

        Raises BadRecord when the encoded record is over ``max_record_bytes``.
        """
        return self.send_raw(*encode_message(record, self.max_record_bytes))

    def publish_path(
        self, path: Path | str, source_id: str | None = None, meta: dict[str, Any] | None = None
    ) -> str:
        """Publish a local file (kind sniffed, ``<name>.meta.json`` sidecar merged into meta)."""
        path = Path(path)
        if path.is_file() and path.stat().st_size > self.max_record_bytes:
            raise BadRecord(
                f"{path} is {_size(path.stat().st_size)}, over the record limit of "
                f"{_size(self.max_record_bytes)}; it was not published",
                stage="publish",
            )
        return self.publish(record_from_path(path, source_id, meta))

    def delete(self, source_id: str, reason: str | None = None) -> str:
        """Publish an ``op=delete`` record for ``source_id``."""
        meta = {"reason": reason} if reason else {}
        return self.publish(Record(source_id=source_id, op="delete", meta=meta, ts=time.time()))

    def send_raw(self, key: bytes | None, value: bytes | None) -> str:
        """Send bytes as they are (a dead letter's original, for replay) to the records topic."""
        size = len(value or b"") + len(key or b"")
        if size > self.max_record_bytes:
            raise BadRecord(
                f"message of {_size(size)} is over the limit of {_size(self.max_record_bytes)}",
                stage="publish",
            )
        if self.outbox is None:
            return self._send_now(key, value)
        row = self.outbox.accept(self.topic, key, value)
        self._send_tracked(row, self.topic, key, value)
        return f"outbox:{row}"

    def resend(self, entry: OutboxEntry) -> None:
        """Send an outbox row again (used by :meth:`Outbox.republish`)."""
        self._send_tracked(entry.id, entry.topic, entry.key, entry.value)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker has acknowledged every send; record positions in the outbox."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s or self._ack_timeout_s)
        except KafkaError as exc:
            raise self._send_failed(exc) from exc
        self._drain()

    def close(self, timeout_s: float | None = None) -> None:
        """Flush (up to ``timeout_s``, default the ack timeout) and close; what is not
        acknowledged by then stays in the outbox."""
        try:
            self.flush(timeout_s)
        finally:
            self._producer.close(timeout=min(timeout_s or 5.0, 5.0))

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the error; what the outbox holds is re-sent later
            self._producer.close(timeout=5)

    def _send_now(self, key: bytes | None, value: bytes | None) -> str:
        from kafka.errors import KafkaError

        try:
            meta = self._producer.send(self.topic, key=key, value=value).get(self._ack_timeout_s)
        except KafkaError as exc:
            raise self._send_failed(exc) from exc
        return f"{meta.topic}/{meta.partition}/{meta.offset}"

    def _send_tracked(self, row: int, topic: str, key: bytes | None, value: bytes | None) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaError as exc:
            raise self._send_failed(exc) from exc
        self._in_flight.append((row, future))
        if len(self._in_flight) >= _MAX_IN_FLIGHT:
            self.flush()

    def _drain(self) -> None:
        assert self.outbox is not None or not self._in_flight
        in_flight, self._in_flight = self._in_flight, []
        failed: BaseException | None = None
        for row, future in in_flight:
            try:
                meta = future.get(self._ack_timeout_s)
            except Exception as exc:  # the row stays 'accepted' and is re-sent later
                failed = failed or exc
                continue
            assert self.outbox is not None
            self.outbox.mark_sent(row, self.cluster_id, meta.topic, meta.partition, meta.offset)
        if failed is not None:
            raise self._send_failed(failed)

    def _send_failed(self, exc: BaseException) -> BrokerError:
        kept = " (accepted records stay in the outbox and are re-sent)" if self.outbox else ""
        return BrokerError(f"Kafka at {self.bootstrap} did not acknowledge a record: {exc}{kept}")
