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
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener

from kinject.errors import BrokerError
from kinject.stream.clients import ClusterWatch

log = logging.getLogger(__name__)

# Reconnection backoff: doubles from the first value up to the cap, reset by a good step.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class Reconnect(Exception):
    """The member's clients must be recreated (the broker was lost, or is a new cluster)."""


class ClusterGuard:
    """Remembers the cluster a group member joined and raises Reconnect once it changed."""

    def __init__(self, watch: ClusterWatch) -> None:
        self.watch = watch
        self.joined: str | None = None
        self._moved = False

    def join(self) -> None:
        """Call before subscribing: the cluster the new consumer belongs to."""
        self.joined = self.watch.cluster_id()
        self._moved = False

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

    def check(self, consumer: Any) -> None:
        """Cheap check after a poll, before anything polled is used: a rejoin onto another
        cluster, or the consumer's own metadata naming another cluster."""
        if self._moved:
            raise Reconnect("the group was rejoined on another Kafka cluster")
        cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
        current = getattr(cluster, "cluster_id", None)
        if current is None:
            return
        if self.joined is None:
            self.joined = current
        elif current != self.joined:
            raise Reconnect(f"the Kafka cluster changed ({self.joined} -> {current})")

    def confirm(self) -> None:
        """Ask the broker right before a commit: a consumer that has not noticed a restarted
        in-memory broker would commit its old log's positions into the new cluster's group,
        and the next consumer would skip the records published there since."""
        if self._moved or self.watch.cluster_id() != self.joined:
            raise Reconnect("the Kafka cluster changed before the commit")

    def close(self) -> None:
        self.watch.close()


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
) -> int:
    """Call ``step`` until ``stop`` is set. When the broker is lost (or is another cluster),
    call ``on_lost`` and ``disconnect``, wait with a growing backoff and ``connect`` again.
    What was consumed but not committed is read again by the next consumer. Returns how
    many reconnects it took."""
    from kafka.errors import KafkaError

    backoff, reconnects = RETRY_FIRST_S, 0
    try:
        while not stop.is_set():
            try:
                if not connected():
                    connect()
                step()
                backoff = RETRY_FIRST_S
            except (KafkaError, BrokerError, Reconnect) as exc:
                reconnects += 1
                on_lost()
                log.warning("%s lost the broker at %s (%s: %s); reconnecting in %.1f s", what,
                            bootstrap, type(exc).__name__, exc, backoff)
                disconnect()
                stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
    finally:
        disconnect()
    return reconnects
