"""Ingest worker: kinject.records -> parse, chunk, embed -> kinject.chunks (or kinject.dlq).

Micro-batches: it polls up to ``batch_size`` records, embeds all their chunks in one call,
publishes one SourceUpdate per record keyed by source id (per-source order holds), waits
for the broker to acknowledge, and only then commits the consumed offsets. A crash before
the commit re-delivers the batch; the index's writes are idempotent, so nothing is lost or
doubled. A record that fails goes to the dead-letter topic with its reason and the worker
moves on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from kinject.config import KafkaSettings
from kinject.errors import BadRecord
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import Embedder
from kinject.ingest.envelope import decode_record
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.ingest.sniff import sniff_kind
from kinject.stream.clients import make_consumer, make_producer
from kinject.stream.events import encode_dead_letter, encode_update
from kinject.stream.topics import Topics
from kinject.types import Chunk, Record, content_hash

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    msg: Any
    source_id: str
    op: str
    chunks: list[Chunk]
    position: tuple[str, int, int]
    digest: str | None


class IngestWorker:
    """One member of the ``kinject-ingest`` consumer group."""

    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap: str,
        config: IngestConfig,
        embedder: Embedder,
        *,
        group_id: str = "kinject-ingest",
        batch_size: int = 32,
    ) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.config = config
        self.embedder = embedder
        self.group_id = group_id
        self.batch_size = batch_size
        self.topics = Topics.from_settings(kafka)
        self.processed = 0
        self.dead_letters = 0
        # Set once the group has assigned partitions to this worker.
        self.ready = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None

    def start(self) -> None:
        from kinject.ingest import ocr

        self.embedder.warm_up()
        if self.config.ocr_engine != "none":
            ocr.warm_up(self.config.ocr_engine)
        self._producer = make_producer(self.kafka, self.bootstrap)
        self._consumer = make_consumer(
            self.kafka, self.bootstrap, self.group_id, [self.topics.records]
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.close()

    def run(self, stop: threading.Event, poll_timeout_ms: int = 200) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.poll_once(poll_timeout_ms)
        finally:
            self.close()

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one micro-batch; return how many records it consumed."""
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=self.batch_size)
        if not self.ready.is_set() and self._consumer.assignment():
            self.ready.set()
        messages = [m for batch in polled.values() for m in batch]
        if not messages:
            return 0
        # Records that need OCR take seconds; the others are answerable in well under one.
        # Send the quick ones' updates first, then the slow ones': every record of a source
        # stays in one group, so per-source order holds, and the batch commits once.
        decoded = [self._decode(m) for m in messages]
        slow_sources = {r.source_id for _, r in decoded if r is not None and _is_slow(r)}
        for group in (False, True):
            pending = [p for m, r in decoded if r is not None
                       and (r.source_id in slow_sources) == group
                       and (p := self._ingest(m, r)) is not None]
            for update in self._embed(pending):
                self._producer.send(self.topics.chunks, key=update.source_id.encode(),
                                    value=encode_update(update))
        # Durable before commit: the broker has acknowledged every update and dead letter.
        self._producer.flush()
        self._consumer.commit()
        self.processed += len(messages)
        return len(messages)

    def _decode(self, msg: Any) -> tuple[Any, Record | None]:
        try:
            return msg, decode_record(msg.value, msg.key, (msg.topic, msg.partition, msg.offset))
        except BadRecord as exc:
            self._dead_letter(msg, str(exc), exc.stage, type(exc).__name__)
            return msg, None

    def _ingest(self, msg: Any, record: Record) -> _Pending | None:
        position = (msg.topic, msg.partition, msg.offset)
        if record.op == "delete":
            return _Pending(msg, record.source_id, "delete", [], position, None)
        try:
            result = ingest_record(record, self.config)
            if not result.chunks:
                why = (f"all {result.dropped} chunk(s) fell below the informativeness "
                       "threshold (boilerplate?)" if result.dropped
                       else "no text could be extracted from the record")
                raise BadRecord(why, stage="clean" if result.dropped else "parse")
        except BadRecord as exc:
            self._dead_letter(msg, str(exc), exc.stage, type(exc).__name__)
            return None
        except Exception as exc:  # a parser bug must not stop the partition
            log.exception("unexpected failure on %s", position)
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}", "ingest", type(exc).__name__)
            return None
        return _Pending(msg, record.source_id, "upsert", list(result.chunks), position,
                        content_hash(record.content))

    def _embed(self, pending: list[_Pending]) -> list[SourceUpdate]:
        texts = [c.text for p in pending for c in p.chunks]
        try:
            vectors = self.embedder.encode(texts) if texts else np.zeros((0, 0), np.float32)
        except Exception as exc:
            if len(pending) == 1:
                self._dead_letter(
                    pending[0].msg, f"embedding failed: {exc}", "embed", type(exc).__name__
                )
                return []
            # Find the record that breaks the batch: embed each one on its own.
            return [u for p in pending for u in self._embed([p])]
        updates, start = [], 0
        for p in pending:
            n = len(p.chunks)
            updates.append(
                SourceUpdate(
                    op=p.op,
                    source_id=p.source_id,
                    chunks=tuple(p.chunks),
                    vectors=vectors[start : start + n] if n else np.zeros((0, 0), np.float32),
                    content_hash=p.digest,
                    record_position=p.position,
                    embedder=self.embedder.name,
                )
            )
            start += n
        return updates

    def _dead_letter(self, msg: Any, reason: str, stage: str, error_type: str) -> None:
        log.warning(
            "dead letter %s[%d]@%d (%s): %s", msg.topic, msg.partition, msg.offset, stage, reason
        )
        self._producer.send(
            self.topics.dlq,
            key=msg.key,
            value=encode_dead_letter(
                reason=reason,
                stage=stage,
                error_type=error_type,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                key=msg.key,
                value=msg.value,
            ),
        )
        self.dead_letters += 1


_SLOW_KINDS = frozenset({"image", "pdf"})


def _is_slow(record: Record) -> bool:
    """Records whose parsing may need OCR."""
    if record.op == "delete":
        return False
    kind = record.kind or sniff_kind(record.content, record.meta.get("filename"))
    return kind in _SLOW_KINDS
