"""Corpus materialiser: kinject.chunks -> the fine-tuning CorpusStore.

One consumer group per corpus store (``<prefix>-corpus-<store id>``, the id a UUID kept in
the store): materialisers writing the same store take over partitions from each other
instead of doubling the work, and a store elsewhere (another data dir) has a group of its
own, so it gets every event instead of half of them. For each chunk event it writes the
source's examples (an upsert replaces the source's chunks and their examples; a delete
removes them), and only after the store has committed does it commit the consumed offsets.
A crash in between re-delivers the batch, and the store's writes are idempotent (example ids
are content hashes), so nothing is lost or doubled.

When the broker comes back as a new cluster (the embedded broker keeps its log in memory),
the group's offsets are gone with it: the materialiser reconnects and reads the new log from
the start, which the idempotent writes make safe.

One event the store or the example builder fails on (text SQLite cannot hold, metadata of
the wrong shape, a source too large for one statement) must not stop the corpus: it is tried
``ATTEMPTS`` times, then dead-lettered with its reason (stage ``corpus``, without its bytes:
they are a chunk event, not a record to replay; publish the source again) and the batch goes
on. The store's own trouble (a database locked past its busy timeout, a full disk) is not
the event's fault: it is raised, the batch is read again and nothing is dropped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.finetune.corpus import CorpusStore
from kinject.stream.clients import ClusterWatch, make_producer
from kinject.stream.events import decode_update, encode_dead_letter, is_image_event
from kinject.stream.reconnect import ClusterGuard, Reconnect, close_consumer, run_reconnecting
from kinject.stream.topics import Topics

if TYPE_CHECKING:
    from kinject.stream.dlq_store import DeadLetterStore

log = logging.getLogger(__name__)

# Tries of one chunk event before it is dead-lettered: a failure that goes away when tried
# again (the store busy a moment) is not the event's fault.
ATTEMPTS = 3
# Seconds between those tries (doubled each time).
RETRY_WAIT_S = 0.5
# Words of SQLite errors that say the store is in trouble, not the event.
_STORE_TROUBLE = ("locked", "busy", "disk", "i/o", "readonly", "unable to open", "interrupt")


def _store_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the store's state (raise: the batch is read again), not
    from the event (dead-letter it)."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, sqlite3.OperationalError) and any(
        w in str(exc).lower() for w in _STORE_TROUBLE)


class CorpusMaterialiser:
    def __init__(self, kafka: KafkaSettings, bootstrap: str, store: CorpusStore, *,
                 group_id: str | None = None, max_records: int = 256,
                 on_delete: Callable[[str], object] | None = None,
                 dlq_store: DeadLetterStore | None = None) -> None:
        self.kafka = kafka
        # Dead letters are kept here (durably) before they go to the dlq topic.
        self.dlq_store = dlq_store
        # Called with the source id once a delete is in the store: deletes reach the weights
        # (kinject.finetune.jobs.deletion_hook taints the adapters trained on the source).
        self.on_delete = on_delete
        self.bootstrap = bootstrap
        self.store = store
        self.topics = Topics.from_settings(kafka)
        self.group_id = group_id or self.topics.corpus_group(store.store_id)
        self.max_records = max_records
        self.applied = 0  # chunk events written to the store
        self.examples_added = 0
        self.examples_removed = 0
        self.skipped = 0
        self.dead_letters = 0
        self.ready = threading.Event()  # set once the group has assigned partitions
        self._consumer: Any = None
        self._producer: Any = None
        self._letters: list[Any] = []  # dead-letter sends of the current batch
        self._guard = ClusterGuard(ClusterWatch(kafka, bootstrap))

    def start(self) -> None:
        self._letters.clear()
        self._producer = make_producer(self.kafka, self.bootstrap)
        self._consumer = self._guard.subscribe(self.kafka, self.bootstrap, self.group_id,
                                               self.topics.chunks)

    def close(self) -> None:
        consumer, producer, self._consumer, self._producer = (
            self._consumer, self._producer, None, None)
        self.ready.clear()
        self._guard.close()
        close_consumer(consumer)
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception as exc:  # a broker that is gone must not make close() raise
                log.debug("closing the producer: %s", exc)

    def run(self, stop: threading.Event, poll_timeout_ms: int = 200) -> None:
        """Work until ``stop`` is set, reconnecting (with backoff) when the broker is lost."""
        run_reconnecting("corpus materialiser", self.bootstrap, stop,
                         connected=lambda: self._consumer is not None, connect=self.start,
                         step=lambda: self.poll_once(poll_timeout_ms), disconnect=self.close)

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Apply one batch of chunk events; return how many were written to the store."""
        messages = self._guard.poll(self._consumer, self.ready, timeout_ms, self.max_records)
        if not messages:
            return 0
        applied = 0
        for msg in messages:
            applied += self._apply_or_dead_letter(msg)
        # Durable before commit: every write above is a committed SQLite transaction,
        # fsynced here (a power cut must not lose what the group's offsets say is done).
        if applied:
            self.store.sync()
        if self._letters:  # acknowledged before the offsets move past their events
            self._producer.flush()
            letters, self._letters = self._letters, []
            for future in letters:
                if future.failed():
                    raise Reconnect(f"the broker did not take a dead letter: {future.exception}")
        if not self._guard.commit(self._consumer):
            return 0
        self.applied += applied
        return applied

    def _apply_or_dead_letter(self, msg: Any) -> int:
        """Apply one event, trying again when it fails; an event that keeps failing is
        dead-lettered (0 applied), unless the store itself is in trouble (raised)."""
        wait = RETRY_WAIT_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._apply(msg)
            except (KafkaError, BrokerError, Reconnect):
                raise
            except Exception as exc:
                if attempt < ATTEMPTS:
                    log.warning("chunk event %s[%d]@%d failed in the corpus (%s: %s); "
                                "trying again (%d/%d)", msg.topic, msg.partition, msg.offset,
                                type(exc).__name__, exc, attempt + 1, ATTEMPTS)
                    time.sleep(wait)
                    wait *= 2
                    continue
                if _store_trouble(exc):
                    raise  # not the event's fault: the batch is read again, nothing dropped
                log.exception("chunk event %s[%d]@%d keeps failing in the corpus; dead-lettered",
                              msg.topic, msg.partition, msg.offset)
                self._dead_letter(msg, exc)
        return 0

    def _dead_letter(self, msg: Any, exc: Exception) -> None:
        from kinject.stream.dlq_store import letter_digest

        reason = (f"the fine-tuning corpus could not take this chunk event "
                  f"({type(exc).__name__}: {exc}); the source has no training examples "
                  "until it is published again")[:4000]
        error_type = type(exc).__name__
        # Without the bytes: a chunk event is no record, replaying it would dead-letter it
        # again (and the event itself stays in the chunks topic).
        digest = letter_digest(msg.key, msg.value)
        if self.dlq_store is not None:  # durable before the offset is committed
            self.dlq_store.record(cluster_id=self._guard.joined, topic=msg.topic,
                                  partition=msg.partition, offset=msg.offset, key=msg.key,
                                  value=None, stage="corpus", reason=reason,
                                  error_type=error_type, digest=digest, keep_value=False)
        self._letters.append(self._producer.send(
            self.topics.dlq, key=msg.key,
            value=encode_dead_letter(reason=reason, stage="corpus", error_type=error_type,
                                     topic=msg.topic, partition=msg.partition,
                                     offset=msg.offset, key=msg.key, value=None,
                                     cluster_id=self._guard.joined, digest=digest)))
        self.dead_letters += 1

    def _apply(self, msg: Any) -> int:
        value = msg.value
        if value is None:
            return 0
        if is_image_event(value):
            # images reach the corpus as their caption and OCR text chunks
            return 0
        try:
            update = decode_update(value)
        except (ValueError, KeyError, TypeError) as exc:
            self.skipped += 1
            log.error("skipping unreadable chunk event %s[%d]@%d: %s", msg.topic,
                      msg.partition, msg.offset, exc)
            return 0
        if update.op == "delete":
            self.examples_removed += self.store.remove_source(update.source_id)
            if self.on_delete is not None:
                self.on_delete(update.source_id)
        else:
            added, removed = self.store.replace_source(update.source_id, list(update.chunks))
            self.examples_added += added
            self.examples_removed += removed
        return 1
