"""Ingest worker: kinject.records -> parse, chunk, embed -> kinject.chunks (or kinject.dlq).

Micro-batches: it polls up to ``batch_size`` records, embeds all their chunks in one call,
publishes one SourceUpdate per record keyed by source id (per-source order holds), waits
for the broker to acknowledge, and only then commits the consumed offsets. A crash before
the commit re-delivers the batch; the index's writes are idempotent, so nothing is lost or
doubled. A record that fails goes to the dead-letter topic with its reason and the worker
moves on.

The broker may go away (a restart, a network cut) and come back. ``run`` then closes its
clients, waits with a growing backoff and connects again; a new consumer starts from the
group's committed offsets, so the batch that failed is read again. When the broker comes
back as a new cluster (the embedded broker's log is in memory), the worker notices the new
cluster id and re-reads from that cluster's committed offsets (none: the start), instead of
fetching from its old position in a log that no longer exists.

Each record is read (parsed, OCR'd, chunked) in a child process under a time budget
(``record_timeout_s``, :mod:`kinject.stream.ingest_process`): a record over it is stopped
hard, dead-lettered and committed with its batch, so it is never polled again and the good
records behind it flow on. While a long record is read, the worker pauses its partitions
and polls every second, so the group keeps it as a member however long the budget is; a
record never runs into ``max_poll_interval`` (which used to evict the worker, fail its
commit and hand it the same record again, one dead letter per pass). A record already
dead-lettered for its budget at the same cluster, topic, partition and offset (its commit
failed, the batch came back) is not read or dead-lettered again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from kinject.config import KafkaSettings
from kinject.errors import BadRecord, BrokerError
from kinject.index.embedders import Embedder
from kinject.ingest.envelope import decode_envelope, read_uri
from kinject.ingest.pipeline import IngestConfig, ingest_record, nothing_extracted
from kinject.ingest.sniff import sniff_kind
from kinject.stream.clients import ClusterWatch, make_producer
from kinject.stream.events import encode_dead_letter, encode_update
from kinject.stream.ingest_embedding import IngestEmbedding, _Pending
from kinject.stream.ingest_process import ChildStartError, IngestProcess, RecordTimeout
from kinject.stream.producer import DEFAULT_MAX_RECORD_BYTES
from kinject.stream.reconnect import ClusterGuard, Reconnect, close_consumer, run_reconnecting
from kinject.stream.topics import Topics
from kinject.types import Record, content_hash

if TYPE_CHECKING:
    from kinject.index.clip_embedder import ClipEmbedder
    from kinject.stream.dlq_store import DeadLetterStore

log = logging.getLogger(__name__)

# Bytes of a dead letter beside the original record (JSON fields, the reason).
_LETTER_OVERHEAD = 64 * 1024
# Seconds one record may take to read; the setting's default (config/ingest.py says why).
DEFAULT_RECORD_TIMEOUT_S = 120.0
# Positions of records dead-lettered for their budget, remembered so none is read twice.
_TIMED_OUT_KEPT = 4096
# How a producer or a broker refuses a message for its size.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


__all__ = ["DEFAULT_RECORD_TIMEOUT_S", "IngestWorker", "_Pending"]


class IngestWorker(IngestEmbedding):
    """One member of the ingest consumer group (``<prefix>-ingest``: ``kinject-ingest``)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap: str,
        config: IngestConfig,
        embedder: Embedder,
        *,
        group_id: str | None = None,
        batch_size: int = 32,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        zh_embedder: Embedder | None = None,
        clip: ClipEmbedder | None = None,
        dlq_store: DeadLetterStore | None = None,
        record_timeout_s: float = DEFAULT_RECORD_TIMEOUT_S,
    ) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
        if record_timeout_s < 0:
            raise ValueError(f"record_timeout_s must be >= 0 (0: no budget), "
                             f"got {record_timeout_s}")
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.config = config
        self.embedder = embedder
        # The Chinese route: zh/mixed chunks are also embedded by this multilingual model.
        self.zh_embedder = zh_embedder
        # CLIP for the image index; None: images are indexed through their caption/OCR only.
        self.clip = clip
        # Where dead letters are kept durably before they go to the (in-memory?) dlq topic.
        self.dlq_store = dlq_store
        self.batch_size = batch_size
        self.max_record_bytes = max_record_bytes
        self.topics = Topics.from_settings(kafka)
        self.group_id = group_id or self.topics.ingest_group
        self.processed = 0
        self.dead_letters = 0
        self.reconnects = 0
        # Set once the group has assigned partitions to this worker.
        self.ready = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self._guard = ClusterGuard(ClusterWatch(kafka, bootstrap))
        # Dead-letter sends of the current batch: (future, key, the letter's fields when it
        # carries the record's bytes, to send it again without them if it is refused).
        self._letters: list[tuple[Any, bytes | None, dict[str, Any] | None]] = []
        self._warm = False
        # A file or URL a record names is read like a record: capped in size, and (with a
        # budget) in the child process, within the record's time.
        self._uris = dataclasses.replace(config.uris, max_bytes=max_record_bytes)
        # Records are read in a child process under this budget; 0: in this thread, unbounded.
        self.record_timeout_s = record_timeout_s
        self.child = (IngestProcess(dataclasses.replace(config, uris=self._uris),
                                    record_timeout_s) if record_timeout_s else None)
        self._timed_out: OrderedDict[tuple[str | None, str, int, int], None] = OrderedDict()
        # The largest chunk event the producer sends (its max_request_size, less room for
        # the record's framing and key).
        self._max_event_bytes = 3 * max_record_bytes + _LETTER_OVERHEAD // 2

    def start(self, stop: threading.Event | None = None) -> None:
        """Load the models (once) and the ingest child, then connect; with ``stop`` set by
        then (the models take seconds, more on a busy machine), connect nothing: a process
        shutting down may already be stopping its broker."""
        from kinject.ingest import ocr

        if not self._warm:
            self.embedder.warm_up()
            if self.zh_embedder is not None:
                self.zh_embedder.warm_up()
            if self.clip is not None:
                self.clip.warm_up()
            if self.config.ocr_engine != "none" and self.child is None:
                ocr.warm_up(self.config.ocr_engine)  # the child loads its own
            self._warm = True
        if self.child is not None:
            self.child.start()
        if stop is not None and stop.is_set():
            return
        self._letters.clear()
        # Room for a dead letter that keeps (base64) the bytes of an oversized record.
        self._producer = make_producer(
            self.kafka, self.bootstrap,
            max_request_size=3 * self.max_record_bytes + _LETTER_OVERHEAD)
        self._consumer = self._guard.subscribe(self.kafka, self.bootstrap, self.group_id,
                                               self.topics.records)

    def close(self) -> None:
        consumer, producer, self._consumer, self._producer = (
            self._consumer, self._producer, None, None)
        self._guard.close()
        if self.child is not None:
            self.child.close()
        # A broker that is gone must not make close() raise or hang for long.
        close_consumer(consumer)
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception as exc:
                log.debug("closing the producer: %s", exc)

    def run(self, stop: threading.Event, poll_timeout_ms: int = 200) -> None:
        """Work until ``stop`` is set, reconnecting (with backoff) whenever the broker is lost."""

        def lost() -> None:
            self.reconnects += 1
            self.ready.clear()

        run_reconnecting("ingest worker", self.bootstrap, stop,
                         connected=lambda: self._consumer is not None,
                         connect=lambda: self.start(stop),
                         step=lambda: self.poll_once(poll_timeout_ms), disconnect=self.close,
                         on_lost=lost, retry_on=(ChildStartError,))

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one micro-batch; return how many records it consumed."""
        if paused := self._consumer.paused():  # by the keepalive of the batch before
            self._consumer.resume(*paused)
        messages = self._guard.poll(self._consumer, self.ready, timeout_ms, self.batch_size)
        if not messages:
            return 0
        sends: list[tuple[Any, Any]] = []  # (future, the message the event came from)
        # Records that need OCR take seconds; the others are answerable in well under one.
        # Send the quick ones' updates first, then the slow ones': every record of a source
        # stays in one group, so per-source order holds, and the batch commits once.
        decoded = [self._decode(m) for m in messages]
        slow_sources = {r.source_id for _, r, uri in decoded
                        if r is not None and _is_slow(r, uri)}
        for group in (False, True):
            pending = [p for m, r, uri in decoded if r is not None
                       and (r.source_id in slow_sources) == group
                       and (p := self._ingest(m, r, uri)) is not None]
            pending, images_of = self._embed_images(pending)
            msgs: dict[Any, Any] = {p.position: p.msg for p in pending}
            # Each record's image update right after its text update (same key, same
            # partition): a text update clears the source's images in a replica and this
            # one sets them; the next record of the source (a delete, a version without
            # images) comes after both. A record whose text was dead-lettered sends neither.
            events: list[tuple[str, Any, bytes]] = []
            for u in self._embed(pending):
                events.append((u.source_id, u.record_position, encode_update(u)))
                if u.record_position is not None and (
                        image := images_of.get(u.record_position)) is not None:
                    events.append((u.source_id, u.record_position, image))
            # A record within its limit can make events several times its size (a vector
            # per chunk): one the producer would refuse is dead-lettered whole, or the
            # refusal would be taken for a lost broker and the batch read again forever.
            too_large = {pos: len(value) for _, pos, value in events
                         if len(value) > self._max_event_bytes}
            for pos, size in too_large.items():
                self._dead_letter(msgs[pos], f"its chunk events are too large to publish "
                                  f"({size:,} bytes, over {self._max_event_bytes:,}); split "
                                  "the record", "publish", "MessageSizeTooLargeError")
            for source_id, pos, value in events:
                if pos not in too_large:
                    sends.append((self._producer.send(self.topics.chunks,
                                                      key=source_id.encode(), value=value),
                                  msgs.get(pos)))
        # Durable before commit: the broker has acknowledged every update and dead letter.
        # flush() only waits; a send that failed says so in its future, and then nothing
        # is committed (the batch is read again after the reconnect).
        self._producer.flush()
        # A broker with a smaller message limit (Kafka's default is 1 MB) refuses an event
        # for good: dead-letter its record rather than read the batch again forever.
        refused = {id(f): m for f, m in sends if m is not None and f.failed()
                   and isinstance(f.exception, _TOO_LARGE)}
        for msg in {id(m): m for m in refused.values()}.values():
            self._dead_letter(msg, "the broker refused its chunk events as too large "
                              f"({self.topics.chunks})", "publish", "MessageSizeTooLargeError")
        if refused:
            self._producer.flush()
        self._resend_refused_letters()
        for future in [*(f for f, _ in sends if id(f) not in refused),
                       *(f for f, _, _ in self._letters)]:
            if future.failed():
                raise Reconnect(f"the broker did not acknowledge a write: {future.exception}")
        self._letters.clear()
        if not self._guard.commit(self._consumer):
            return 0
        self.processed += len(messages)
        return len(messages)

    def _decode(self, msg: Any) -> tuple[Any, Record | None, str | None]:
        """The message, its Record (None: dead-lettered) and the ``uri`` it names, which
        is read later with the record itself (in the child, within its budget)."""
        size = len(msg.value or b"") + len(msg.key or b"")
        if size > self.max_record_bytes:
            # Nothing past this point reads it: parsing 50 MB would stall the partition.
            keep = size <= 2 * self.max_record_bytes
            self._dead_letter(msg, f"record of {size:,} bytes is over the limit of "
                              f"{self.max_record_bytes:,} bytes"
                              + ("" if keep else "; its bytes are too large to keep here"),
                              "validate", "BadRecord", keep_value=keep)
            return msg, None, None
        try:
            record, uri = decode_envelope(msg.value, msg.key,
                                          (msg.topic, msg.partition, msg.offset))
        except BadRecord as exc:
            self._dead_letter(msg, str(exc), exc.stage, type(exc).__name__)
            return msg, None, None
        return msg, record, uri

    def _ingest(self, msg: Any, record: Record, uri: str | None = None) -> _Pending | None:
        position = (msg.topic, msg.partition, msg.offset)
        if record.op == "delete":
            return _Pending(msg, record.source_id, "delete", [], position, None)
        seen = (self._guard.joined, *position)
        if seen in self._timed_out:
            log.info("%s[%d]@%d was dead-lettered for its time budget before; skipped",
                     *position)
            return None
        try:
            digest = None
            if self.child is not None and uri is not None:
                result, digest = self.child.run_uri(record, uri,
                                                    keepalive=self._keep_membership)
            elif self.child is not None:
                result = self.child.run(record, keepalive=self._keep_membership)
            else:
                if uri is not None:
                    record = read_uri(record, uri, self._uris)
                result = ingest_record(record, self.config)
            if not result.chunks and not (result.images and self.clip is not None):
                why = (f"all {result.dropped} chunk(s) fell below the informativeness "
                       "threshold (boilerplate?)" if result.dropped
                       else nothing_extracted(result))
                raise BadRecord(why, stage="clean" if result.dropped else "parse")
        except RecordTimeout as exc:
            self._timed_out[seen] = None
            while len(self._timed_out) > _TIMED_OUT_KEPT:
                self._timed_out.popitem(last=False)
            self._dead_letter(msg, str(exc), exc.stage, type(exc).__name__)
            return None
        except BadRecord as exc:
            self._dead_letter(msg, str(exc), exc.stage, type(exc).__name__)
            return None
        except (KafkaError, BrokerError, Reconnect, ChildStartError):
            raise  # the broker (polled while the record was read) or the set-up, not the record
        except Exception as exc:  # a parser bug must not stop the partition
            log.exception("unexpected failure on %s", position)
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}", "ingest", type(exc).__name__)
            return None
        return _Pending(msg, record.source_id, "upsert", list(result.chunks), position,
                        digest or content_hash(record.content), list(result.images), record.ts)

    def _keep_membership(self) -> None:
        """Called about once a second while a record is read: poll with every partition
        paused, so the group sees this member alive (max_poll_interval) and no record is
        returned. A partition a rebalance assigns meanwhile is not paused yet: what a poll
        returns from it is put back (seek) and read after the batch."""
        consumer = self._consumer
        consumer.pause(*consumer.assignment())
        for tp, batch in consumer.poll(timeout_ms=0).items():
            consumer.seek(tp, min(m.offset for m in batch))
            consumer.pause(tp)

    def _dead_letter(self, msg: Any, reason: str, stage: str, error_type: str,
                     *, keep_value: bool = True) -> None:
        from kinject.stream.dlq_store import letter_digest

        log.warning(
            "dead letter %s[%d]@%d (%s): %s", msg.topic, msg.partition, msg.offset, stage, reason
        )
        digest = letter_digest(msg.key, msg.value)
        if self.dlq_store is not None:  # durable before the offset is committed
            self.dlq_store.record(cluster_id=self._guard.joined, topic=msg.topic,
                                  partition=msg.partition, offset=msg.offset, key=msg.key,
                                  value=msg.value, stage=stage, reason=reason,
                                  error_type=error_type, digest=digest, keep_value=keep_value)
        letter: dict[str, Any] = dict(
            reason=reason, stage=stage, error_type=error_type, topic=msg.topic,
            partition=msg.partition, offset=msg.offset, key=msg.key,
            cluster_id=self._guard.joined, digest=digest)
        value = msg.value if keep_value else None
        future = self._send_letter(msg.key, letter, value)
        self._letters.append((future, msg.key, letter if value is not None else None))
        self.dead_letters += 1

    def _send_letter(self, key: bytes | None, letter: dict[str, Any], value: bytes | None
                     ) -> Any:
        """Send a dead letter; one the producer refuses for its size (base64 makes it a third
        larger than the record) goes without the record's bytes, or the refusal would be
        taken for a lost broker and the batch read again forever."""
        try:
            return self._producer.send(self.topics.dlq, key=key,
                                       value=encode_dead_letter(**letter, value=value))
        except _TOO_LARGE:
            if value is None:
                raise
            return self._send_letter(key, self._without_bytes(letter), None)

    def _without_bytes(self, letter: dict[str, Any]) -> dict[str, Any]:
        log.warning("the dead letter of %s[%d]@%d is too large for the broker with the "
                    "record's bytes: sent without them", letter["topic"], letter["partition"],
                    letter["offset"])
        kept = ("the dead-letter store of the worker's data dir keeps them"
                if self.dlq_store is not None else "they are not kept: publish the source again")
        return {**letter, "reason": f"{letter['reason']} (the letter with the record's bytes "
                                    f"was too large for the broker; {kept})"}

    def _resend_refused_letters(self) -> None:
        """Letters the broker refused for their size (Kafka's message limit is 1 MB by
        default) go again without the record's bytes."""
        again = False
        for i, (future, key, letter) in enumerate(self._letters):
            if letter is not None and future.failed() and isinstance(future.exception,
                                                                     _TOO_LARGE):
                self._letters[i] = (self._send_letter(key, self._without_bytes(letter), None),
                                    key, None)
                again = True
        if again:
            self._producer.flush()


_SLOW_KINDS = frozenset({"image", "pdf"})


def _is_slow(record: Record, uri: str | None = None) -> bool:
    """Records whose parsing may need OCR (or whose bytes must be fetched first)."""
    if record.op == "delete":
        return False
    if uri is not None:
        return record.kind is None or record.kind in _SLOW_KINDS
    kind = record.kind or sniff_kind(record.content, record.meta.get("filename"))
    return kind in _SLOW_KINDS
