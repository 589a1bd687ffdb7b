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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kinject.config import KafkaSettings
from kinject.finetune.corpus import CorpusStore
from kinject.stream.clients import ClusterWatch
from kinject.stream.events import decode_update, is_image_event
from kinject.stream.reconnect import ClusterGuard, close_consumer, run_reconnecting
from kinject.stream.topics import Topics

log = logging.getLogger(__name__)


class CorpusMaterialiser:
    def __init__(self, kafka: KafkaSettings, bootstrap: str, store: CorpusStore, *,
                 group_id: str | None = None, max_records: int = 256,
                 on_delete: Callable[[str], object] | None = None) -> None:
        self.kafka = kafka
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
        self.ready = threading.Event()  # set once the group has assigned partitions
        self._consumer: Any = None
        self._guard = ClusterGuard(ClusterWatch(kafka, bootstrap))

    def start(self) -> None:
        self._consumer = self._guard.subscribe(self.kafka, self.bootstrap, self.group_id,
                                               self.topics.chunks)

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.ready.clear()
        self._guard.close()
        close_consumer(consumer)

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
            applied += self._apply(msg)
        # Durable before commit: every write above is a committed SQLite transaction,
        # fsynced here (a power cut must not lose what the group's offsets say is done).
        if applied:
            self.store.sync()
        if not self._guard.commit(self._consumer):
            return 0
        self.applied += applied
        return applied

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
