"""What every consumer-group member of kinject shares: a loop that reconnects with backoff
when the broker is lost, and a guard that notices when the broker came back as another
cluster.

The embedded broker keeps its log in memory: after a restart it is a new, empty cluster.
kafka-python keeps a partition's fetch position across a rejoin, and its cached metadata
can keep the old cluster id for minutes; a member that does not notice fetches from, and
commits, positions of a log that no longer exists, and the records published into the new
log below those positions are never read. The guard asks the broker itself after every
rejoin and right before every commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener

from kinject.config import KafkaSettings
from kinject.errors import BrokerError
from kinject.stream.clients import ClusterWatch, make_consumer

log = logging.getLogger(__name__)

# Reconnection backoff: doubles from the first value up to the cap, reset by a good step.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class Reconnect(Exception):
    """The member's clients must be recreated (the broker was lost, or is a new cluster)."""


class ClusterGuard:
    """Remembers the cluster a group member joined and raises Reconnect once it changed."""

    def __init__(self, watch: ClusterWatch, rejoin_wait_s: float = 60.0) -> None:
        self.watch = watch
        self.rejoin_wait_s = rejoin_wait_s
        self.joined: str | None = None
        self._moved = False
        self._noticed: float | None = None  # when the metadata first named another cluster

    def join(self) -> None:
        """Call before subscribing: the cluster the new consumer belongs to."""
        self.joined = self.watch.cluster_id()
        self._moved = False
        self._noticed = None

    def subscribe(self, kafka: KafkaSettings, bootstrap: str, group_id: str, topic: str) -> Any:
        """Join, then a new consumer of ``group_id`` subscribed to ``topic``, whose every
        rejoin this guard checks."""
        self.join()
        consumer = make_consumer(kafka, bootstrap, group_id)
        consumer.subscribe([topic], listener=self.listener())
        return consumer

    def poll(self, consumer: Any, ready: threading.Event, timeout_ms: int, max_records: int
             ) -> list[Any]:
        """The messages of one poll, partition by partition; none when they may not be used
        (see :meth:`usable`). Sets ``ready`` once the group has assigned partitions."""
        polled = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if not self.usable(consumer):  # polled from a vanished log's positions
            return []
        if not ready.is_set() and consumer.assignment():
            ready.set()
        return [m for batch in polled.values() for m in batch]

    def commit(self, consumer: Any) -> bool:
        """Commit what ``consumer`` has consumed, unless the cluster changed (False: nothing
        committed; it is read again once the group has rejoined the new cluster)."""
        if not self.may_commit(consumer):
            return False
        consumer.commit()
        return True

    def listener(self) -> ConsumerRebalanceListener:
        """A rebalance listener that checks the cluster each time partitions are assigned."""
        return _Listener(self)

    def after_rejoin(self) -> None:
        try:
            moved = self.watch.cluster_id() != self.joined
        except Exception as exc:  # unsure: reconnecting is always safe (nothing committed)
            log.info("cannot confirm the cluster after a rejoin (%s); reconnecting", exc)
            moved = True
        self._moved = self._moved or moved

    def usable(self, consumer: Any) -> bool:
        """Cheap check after a poll: may what it returned be used?

        Raises Reconnect once the group was rejoined on another cluster: the member is whole
        there, so closing it leaves the group cleanly and a new consumer starts from the new
        cluster's committed offsets. Returns False (drop the batch, commit nothing) while the
        consumer's metadata already names another cluster but the rejoin is still under way:
        closing a consumer in the middle of its JoinGroup leaves a member behind that Tansu
        waits for, up to the rebalance timeout (5 minutes by default), before anyone else
        may join. A rejoin that has not happened after ``rejoin_wait_s`` reconnects anyway.
        """
        if self._moved:
            raise Reconnect("the group was rejoined on another Kafka cluster")
        cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
        current = getattr(cluster, "cluster_id", None)
        if current is None:
            return True
        if self.joined is None:
            self.joined = current
        return self._same(current)

    def may_commit(self, consumer: Any) -> bool:
        """Right before a commit, ask the broker itself: a consumer that has not noticed a
        restarted in-memory broker would commit its old log's positions into the new
        cluster's group, and the next consumer would skip the records published there since.
        False: commit nothing (what was consumed is read again after the rejoin)."""
        return self.usable(consumer) and self._same(self.watch.cluster_id())

    def _same(self, current: str | None) -> bool:
        if current == self.joined:
            self._noticed = None
            return True
        now = time.monotonic()
        if self._noticed is None:
            self._noticed = now
            log.warning("the Kafka cluster changed (%s -> %s): waiting for the group to rejoin "
                        "there before reading on", self.joined, current)
        elif now - self._noticed > self.rejoin_wait_s:
            raise Reconnect(f"the Kafka cluster changed ({self.joined} -> {current}) and the "
                            f"group did not rejoin within {self.rejoin_wait_s:g} s")
        return False

    def close(self) -> None:
        self.watch.close()


def close_consumer(consumer: Any) -> None:
    """Close a group consumer without committing; a broker that is gone must not make this
    raise."""
    if consumer is None:
        return
    try:
        consumer.close(autocommit=False)
    except Exception as exc:
        log.debug("closing a consumer: %s", exc)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, guard: ClusterGuard) -> None:
        self.guard = guard

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.guard.after_rejoin()


def run_reconnecting(
    what: str,
    bootstrap: str,
    stop: threading.Event,
    *,
    connected: Callable[[], bool],
    connect: Callable[[], None],
    step: Callable[[], object],
    disconnect: Callable[[], None],
    on_lost: Callable[[], None] = lambda: None,
    retry_on: tuple[type[Exception], ...] = (),
) -> int:
    """Call ``step`` until ``stop`` is set. When the broker is lost (or is another cluster),
    call ``on_lost`` and ``disconnect``, wait with a growing backoff and ``connect`` again.
    What was consumed but not committed is read again by the next consumer. Returns how
    many reconnects it took. ``retry_on``: errors of the worker's own set-up (an ingest child
    that did not start on an overloaded machine) handled the same way, logged as errors,
    instead of ending the thread with records left unread until a restart."""
    from kafka.errors import KafkaError

    lost = (KafkaError, BrokerError, Reconnect, *retry_on)

    backoff, reconnects = RETRY_FIRST_S, 0
    try:
        while not stop.is_set():
            try:
                if not connected():
                    connect()
                    if stop.is_set():  # stopped while connecting: no step on a half start
                        break
                step()
                backoff = RETRY_FIRST_S
            except lost as exc:
                reconnects += 1
                on_lost()
                if isinstance(exc, retry_on):
                    log.error("%s: %s: %s; what it held is read again, trying again in %.1f s",
                              what, type(exc).__name__, exc, backoff)
                else:
                    log.warning("%s lost the broker at %s (%s: %s); reconnecting in %.1f s",
                                what, bootstrap, type(exc).__name__, exc, backoff)
                disconnect()
                stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
    finally:
        disconnect()
    return reconnects
