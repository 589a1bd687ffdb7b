"""Index materialiser: kinject.chunks -> the local TextIndex of this replica.

Every serving replica keeps a full copy of the index, so the materialiser reads *all*
partitions by assignment (no consumer group) and keeps its position inside the docstore,
committed in the same transaction as the chunks. On start it seeks to the stored offsets;
when the cluster changed (a restarted in-memory broker is a new cluster with an empty log),
it re-reads from the start, which the idempotent updates make safe. The same holds while it
runs: when the broker comes back as a new cluster, it forgets its offsets and re-reads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kinject.config import KafkaSettings
from kinject.index.text_index import TextIndex
from kinject.stream.clients import make_consumer
from kinject.stream.events import decode_image_update, decode_update, is_image_event
from kinject.stream.topics import Topics

if TYPE_CHECKING:
    from kinject.index.image_index import ImageIndex

log = logging.getLogger(__name__)


class IndexMaterialiser:
    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap: str,
        index: TextIndex,
        *,
        snapshot_every_s: float = 30.0,
        max_records: int = 256,
        images: ImageIndex | None = None,
    ) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.index = index
        # The CLIP image index, when this replica has one; image events are skipped otherwise.
        self.images = images
        self.topics = Topics.from_settings(kafka)
        self.snapshot_every_s = snapshot_every_s
        self.max_records = max_records
        self.applied = 0
        self._consumer: Any = None
        self._last_snapshot = time.monotonic()
        self._cluster: str | None = None
        self._admin: Any = None

    def start(self) -> None:
        from kafka import TopicPartition

        topic = self.topics.chunks
        self._consumer = make_consumer(self.kafka, self.bootstrap, None, [])
        parts = self._consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 15
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        cluster = self._cluster = self._cluster_id()
        known = self.index.source_cluster()
        if known != cluster:
            if known is not None:
                log.warning("the Kafka cluster changed (%s -> %s): the log the index was built "
                            "from is gone; re-reading %s from the start", known, cluster, topic)
            self.index.reset_source(cluster, topic)
        # Kafka answers a fetch past the log end with OffsetOutOfRange, which resets to the
        # earliest offset; the embedded broker's restarts are caught by the cluster id above.
        stored = self.index.applied_offsets(topic)
        for tp in tps:
            nxt = stored.get(tp.partition)
            if nxt is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, nxt)

    def _cluster_changed(self) -> bool:
        """Whether the broker turned into a new cluster (an embedded broker restarted: its
        log is new and empty); if so, forget the stored offsets and re-read from the start.

        The id is asked afresh on every poll (one small request): the consumer's cached
        metadata can keep the old id for minutes while it fetches from its old positions in
        the new log, which would skip what was published there.
        """
        current = self._fresh_cluster()
        if current is None or self._cluster is None or current == self._cluster:
            return False
        topic = self.topics.chunks
        log.warning("the Kafka cluster changed (%s -> %s) while running: re-reading %s from "
                    "the start", self._cluster, current, topic)
        self.index.reset_source(current, topic)
        self._cluster = current
        assigned = list(self._consumer.assignment())
        if assigned:
            self._consumer.seek_to_beginning(*assigned)
        return True

    def _fresh_cluster(self) -> str | None:
        from kafka.errors import KafkaError

        from kinject.stream.clients import make_admin

        try:
            if self._admin is None:
                self._admin = make_admin(self.kafka, self.bootstrap)
            found = self._admin.describe_cluster().get("cluster_id")
        except KafkaError as exc:  # the broker is away: the next poll asks again
            log.debug("cannot ask the cluster id: %s", exc)
            return None
        return str(found) if found else None

    def _cluster_id(self) -> str:
        from kinject.stream.clients import make_admin

        admin = make_admin(self.kafka, self.bootstrap)
        try:
            return str(admin.describe_cluster().get("cluster_id") or "unknown")
        finally:
            admin.close()

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception as exc:
                log.debug("closing the admin client: %s", exc)
            self._admin = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.index.snapshot()
        if self.images is not None:
            self.images.snapshot()

    def run(self, stop: threading.Event, poll_timeout_ms: int = 200) -> None:
        self.start()
        try:
            while not stop.is_set():
                self.poll_once(poll_timeout_ms)
        finally:
            self.close()

    def poll_once(self, timeout_ms: int = 200) -> int:
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        if self._cluster_changed():
            return 0  # what was polled may come from stale positions in the new log
        updates, offsets = [], {}
        changes: list[Any] = []  # text and image updates in log order, for the image index
        for tp, batch in polled.items():
            for msg in batch:
                try:
                    if is_image_event(msg.value):
                        changes.append(decode_image_update(msg.value))
                    else:
                        updates.append(decode_update(msg.value))
                        changes.append(updates[-1])
                except (ValueError, KeyError, TypeError) as exc:
                    # Written by a worker of another version, or corrupted: skip, loudly.
                    log.error(
                        "skipping unreadable chunk event %s[%d]@%d: %s",
                        tp.topic,
                        tp.partition,
                        msg.offset,
                        exc,
                    )
                offsets[(tp.topic, tp.partition)] = msg.offset + 1
        if offsets:
            if self.images is not None:  # before the offsets move: a replay re-applies it
                self.images.apply(changes)
            self.index.apply(updates, offsets)
            self.applied += len(updates)
        if time.monotonic() - self._last_snapshot > self.snapshot_every_s:
            self.index.snapshot()
            if self.images is not None:
                self.images.snapshot()
            self._last_snapshot = time.monotonic()
        return len(changes)
