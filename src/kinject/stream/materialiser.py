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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kinject.config import KafkaSettings
from kinject.index.changes import SourceUpdate
from kinject.index.text_index import TextIndex
from kinject.stream.broker import EMBEDDED_CLUSTER_PREFIX
from kinject.stream.clients import ClusterWatch, make_consumer
from kinject.stream.events import decode_image_update, decode_update, is_image_event
from kinject.stream.topics import Topics

if TYPE_CHECKING:
    from kinject.index.image_index import ImageIndex, ImageUpdate

log = logging.getLogger(__name__)

# A note in the index's state: "1" once this replica has moved its offsets past image events
# without an image index (no CLIP). A start with CLIP re-reads the topic from the start, so
# the images it skipped are embedded; the text updates re-applied on the way are idempotent.
SKIPPED_IMAGES = "skipped_image_events"


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
        watch_every_s: float = 1.0,
        on_delete: Callable[[str], object] | None = None,
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
        self._skipped_images = False  # SKIPPED_IMAGES is noted in the index
        # {partition: next offset} the text index had applied before a re-read for images:
        # text updates below it are not applied (nor recorded in lineage) a second time.
        self._text_done: dict[int, int] = {}
        self._watch = ClusterWatch(kafka, bootstrap)
        self.watch_every_s = watch_every_s
        self._watched = 0.0
        # Called with the source id of each delete before the batch is applied: on a replica
        # that keeps no corpus, this taints its registry's adapters trained on the source
        # (kinject.finetune.jobs.deletion_hook). Before, not after: when it fails the batch
        # is not applied, and the materialiser's restart re-reads it from the stored offsets.
        self.on_delete = on_delete

    def start(self) -> None:
        topic = self.topics.chunks
        self._consumer = make_consumer(self.kafka, self.bootstrap, None, [])
        cluster = self._cluster = self._watch.cluster_id() or "unknown"
        known = self.index.source_cluster()
        if known != cluster:
            if known is not None and _both_embedded(known, cluster):
                # every start of an embedded broker is a new cluster: expected, not alarming
                log.info("a new embedded broker (%s; its log lives in memory): re-reading %s "
                         "from the start, the index keeps what it holds", cluster, topic)
            elif known is not None:
                log.warning("the Kafka cluster changed (%s -> %s): the log the index was built "
                            "from is gone; re-reading %s from the start", known, cluster, topic)
            self.index.reset_source(cluster, topic)
        elif self.images is not None and self.index.note(SKIPPED_IMAGES) == "1":
            log.warning("this replica skipped image events while it had no CLIP model: "
                        "re-reading %s from the start to embed their images", topic)
            # up to where the text index is, the re-read feeds the image index only
            self._text_done = self.index.applied_offsets(topic)
            self.index.reset_source(cluster, topic)
        self._skipped_images = self.index.note(SKIPPED_IMAGES) == "1"
        if self.images is not None and self._skipped_images:
            self.index.set_note(SKIPPED_IMAGES, "0")  # the offsets are gone: read again
            self._skipped_images = False
        deadline = time.monotonic() + 15
        while not self._follow_partitions() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._watched = time.monotonic()

    def _follow_partitions(self) -> bool:
        """Read every partition the chunks topic has now: partitions added by an operator,
        or a topic that a restarted broker re-created with another partition count (Tansu
        creates a topic a producer names before kinject does, with its own default).

        A partition new to this replica starts at its stored offset, else at the start. Kafka
        answers a fetch past the log end with OffsetOutOfRange, which resets to the earliest
        offset; the embedded broker's restarts are caught by the cluster id.
        """
        from kafka import TopicPartition

        topic = self.topics.chunks
        parts = self._watch.partitions(topic)
        have = set(self._consumer.assignment())
        wanted = {TopicPartition(topic, p) for p in parts}
        if not wanted or wanted <= have:
            return bool(wanted)
        self._consumer.assign(sorted(have | wanted))
        stored = self.index.applied_offsets(topic)
        for tp in sorted(wanted - have):
            nxt = stored.get(tp.partition)
            if nxt is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, nxt)
        if have:
            log.info("now reading %s partitions %s", topic, sorted(p.partition for p in wanted))
        return True

    def _moved(self) -> bool:
        """Watch the broker, at most every ``watch_every_s``: when it turned into a new
        cluster (an embedded broker restarted: its log is new and empty), forget the stored
        offsets and re-read from the start; follow the topic's partitions.

        The id is asked straight from the broker: the consumer's cached metadata can keep
        the old id for minutes while it fetches from its old positions in the new log. What
        such a fetch applied in the meantime is re-read after the reset, so a short delay
        costs nothing but the re-read.
        """
        from kafka.errors import KafkaError

        if time.monotonic() - self._watched < self.watch_every_s:
            return False
        self._watched = time.monotonic()
        try:
            current = self._watch.cluster_id()
            moved = current is not None and self._cluster is not None and current != self._cluster
            if moved:
                topic = self.topics.chunks
                log.warning("the Kafka cluster changed (%s -> %s) while running: re-reading %s "
                            "from the start", self._cluster, current, topic)
                self.index.reset_source(current, topic)  # type: ignore[arg-type]
                self._cluster = current
                self._text_done = {}  # a new log: every update is new to the text index
                assigned = list(self._consumer.assignment())
                if assigned:
                    self._consumer.seek_to_beginning(*assigned)
            self._follow_partitions()
        except KafkaError as exc:  # the broker is away: the next poll asks again
            log.debug("cannot watch the Kafka cluster: %s", exc)
            return False
        return moved

    def close(self) -> None:
        self._watch.close()
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
        if self._moved():
            return 0  # what was polled may come from stale positions in the new log
        updates, offsets = [], {}
        # text and image updates in log order, for the image index
        changes: list[SourceUpdate | ImageUpdate] = []
        for tp, batch in polled.items():
            for msg in batch:
                try:
                    if is_image_event(msg.value):
                        changes.append(decode_image_update(msg.value))
                    else:
                        update = decode_update(msg.value)
                        dim = update.vectors.shape[1] if update.chunks else None
                        if dim is not None and dim != self.index.embedder.dim:
                            # The index would refuse the whole batch, again at each retry.
                            raise ValueError(
                                f"{dim}-d vectors (embedder {update.embedder!r}) where the "
                                f"index holds {self.index.embedder.dim}-d ones "
                                f"({self.index.embedder.name!r}); the worker that wrote it "
                                "uses another embedder")
                        if msg.offset >= self._text_done.get(tp.partition, 0):
                            updates.append(update)
                        changes.append(update)  # the image index needs them in log order
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
            if self.images is None and not self._skipped_images and any(
                    not isinstance(c, SourceUpdate) for c in changes):
                # noted before the offsets move past them (a crash in between: noted only)
                log.info("image events skipped: this replica has no CLIP model; set "
                         "KINJECT_MODELS__CLIP_CHECKPOINT and restart to embed them")
                self.index.set_note(SKIPPED_IMAGES, "1")
                self._skipped_images = True
            if self.on_delete is not None:
                for update in updates:
                    if update.op == "delete":
                        self.on_delete(update.source_id)
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


def _both_embedded(old: str, new: str) -> bool:
    return old.startswith(EMBEDDED_CLUSTER_PREFIX) and new.startswith(EMBEDDED_CLUSTER_PREFIX)
