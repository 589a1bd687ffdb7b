"""Keeps a long-running producer's outbox moving: confirm, and re-send what a broker lost.

``kinject publish`` confirms its outbox once, at the end of a run. A process that publishes
for hours (``kinject serve`` behind ``POST /v1/records``) needs the same done periodically:

- *confirm*: ask the broker how far the ingest group has committed and prune the rows it
  has passed, once every reader of the chunks topic given as ``readers`` (this process's
  index, the corpus materialisers' group) has read past what the workers had written by
  then: a chunk event lives only in the broker's log, and an embedded broker's restart
  empties it, so a record whose events a reader had not read yet must stay here to be
  sent again (pruned one round later than the ingest group alone allows);
- *re-send*: rows that no broker acknowledged (a send failed), and rows sent to a cluster
  that is gone (an embedded broker restarted: a new, empty cluster), are sent again, in
  the order they were accepted. Downstream writes are idempotent, so a re-send is safe.

Code that accepts records calls :meth:`OutboxKeeper.wake` and returns at once: the keeper
sends them within moments, so no request thread ever waits on the broker.

Run it in a thread beside the code that publishes::

    keeper = OutboxKeeper(outbox, producer, kafka, bootstrap, interval_s=5.0,
                          lock=publish_lock)
    threading.Thread(target=keeper.run, args=(stop,), daemon=True).start()

``lock`` must be the lock the publishing code holds around its own :class:`Producer`
calls (a Producer is not safe to share between threads without one); the keeper holds it
only while re-sending, never while it waits on the broker for offsets. A broker that is
down is not an error: the keeper logs it, backs off (up to ``max_backoff_s``) and tries
again; accepted records stay in the outbox meanwhile. A record accepted during the backoff
(:meth:`OutboxKeeper.wake`) brings the next try forward, so once the broker is back it is
delivered within about a second, not at the end of a long backoff.

Nothing ends the keeper but ``stop`` or :meth:`OutboxKeeper.close`: any other failure (a
locked or broken outbox file, a bug) is logged with its traceback and retried after the
same backoff, and :meth:`OutboxKeeper.state` says whether its thread still runs (/readyz).
Call :meth:`OutboxKeeper.close` before closing the outbox or the producer it uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kinject.errors import BrokerError
from kinject.stream.clients import wait_until_reachable
from kinject.stream.outbox import Outbox, committed_offsets
from kinject.stream.topics import Topics

if TYPE_CHECKING:
    from kinject.config import KafkaSettings
    from kinject.index.text_index import TextIndex
    from kinject.stream.producer import Producer

log = logging.getLogger(__name__)

# While the broker is down, a record accepted meanwhile brings the next try forward to at
# most this long after the last one: delivered about a second after the broker is back, and
# a flood of requests during the outage costs one probe a second, not one each.
WOKEN_RETRY_S = 1.0
# A record another process (``kinject publish`` beside serve) accepted into this outbox is
# its to send for this long: its send is in flight, and taking it at once sent every record
# twice. A process killed mid-send leaves its records to the keeper after this.
OTHERS_GRACE_S = 30.0


# A reader of the chunks topic: given the broker's cluster id, how far it has read the topic
# in that cluster ({partition: next offset}; nothing while it has not read there).
ChunkReader = Callable[[str | None], Mapping[int, int]]


def index_reader(index: TextIndex, topic: str) -> ChunkReader:
    """The offsets a replica's index has applied (kept in its docstore with the chunks)."""

    def read(cluster_id: str | None) -> Mapping[int, int]:
        if index.source_cluster() != cluster_id:
            return {}
        return index.applied_offsets(topic)

    return read


def group_reader(kafka: KafkaSettings, bootstrap: str, group: Callable[[], str | None],
                 topic: str) -> ChunkReader:
    """The offsets a consumer group has committed on ``topic``; ``group`` names it (None:
    not known yet, so nothing is read)."""

    def read(cluster_id: str | None) -> Mapping[int, int]:
        name = group()
        if name is None:
            return {}
        cluster, committed = committed_offsets(kafka, bootstrap, name)
        if cluster != cluster_id:
            return {}
        return {p: off for (t, p), off in committed.items() if t == topic}

    return read


@dataclass(frozen=True)
class _Mark:
    """What the ingest group had committed, and the end of the chunks topic right after."""

    cluster_id: str | None
    committed: dict[tuple[str, int], int]
    chunk_ends: dict[int, int]


@dataclass
class KeeperStats:
    """What the keeper has done so far (for health pages and metrics)."""

    rounds: int = 0
    confirmed: int = 0
    resent: int = 0
    delivered: int = 0  # sent as soon as they were accepted
    failures: int = 0  # rounds the broker did not answer, in all
    errors: int = 0  # rounds or deliveries that failed otherwise (the outbox file, a bug)
    pending: int = 0  # rows in the outbox after the last round
    last_error: str | None = None
    last_round_at: float | None = None


class OutboxKeeper:
    """Periodic confirm + re-send for one outbox and the producer that fills it."""

    def __init__(
        self,
        outbox: Outbox,
        producer: Producer,
        kafka: KafkaSettings,
        bootstrap: str,
        interval_s: float = 5.0,
        *,
        group_id: str | None = None,
        lock: threading.Lock | threading.RLock | None = None,
        max_backoff_s: float = 60.0,
        readers: Sequence[ChunkReader] = (),
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        if max_backoff_s < interval_s:
            raise ValueError(f"max_backoff_s ({max_backoff_s!r}) must be >= interval_s "
                             f"({interval_s!r})")
        self.outbox = outbox
        self.producer = producer
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.group_id = group_id or Topics.from_settings(kafka).ingest_group
        self.lock = lock or threading.Lock()
        # Readers of the chunks topic that must have read a record's events before it is
        # pruned (none: the ingest group's commit alone confirms a record).
        self.readers = list(readers)
        self._chunks_topic = Topics.from_settings(kafka).chunks
        self._mark: _Mark | None = None
        self.stats = KeeperStats()
        self._failing = 0  # rounds in a row that failed: the backoff grows with them
        self._wake = threading.Event()
        self._round_now = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_try = time.monotonic()  # when the last round started

    def run_once(self) -> tuple[int, int]:
        """One round: prune what the ingest group committed, re-send what the current
        cluster lacks; returns (confirmed, re-sent). Raises BrokerError when the broker
        cannot be asked."""
        # A quick probe first: a client bootstrapping against a broker that is down would
        # block this round for its full request timeout.
        wait_until_reachable(self.bootstrap, timeout_s=min(self.interval_s, 2.0) + 1.0,
                             kafka=self.kafka)
        cluster_id, committed = committed_offsets(self.kafka, self.bootstrap, self.group_id)
        confirmed = self._confirm(cluster_id, committed)
        lacking = self.outbox.lacking(cluster_id)
        resent = 0
        if lacking:
            with self.lock:
                # republish first settles sends in flight, so only rows that no broker of
                # this cluster acknowledged go again.
                resent = self.outbox.republish(self.producer, grace_s=OTHERS_GRACE_S)
        self.stats.rounds += 1
        self.stats.confirmed += confirmed
        self.stats.resent += resent
        self.stats.pending = len(self.outbox)
        self.stats.last_error = None
        self.stats.last_round_at = time.time()
        return confirmed, resent

    def _confirm(self, cluster_id: str | None, committed: dict[tuple[str, int], int]) -> int:
        """Prune what the ingest group committed, once the readers have read its events.

        The chunks topic's end is taken after the group's offsets: a worker publishes a
        record's events before it commits the record, so the end covers them. The next round
        prunes up to those offsets if every reader has read up to that end by then."""
        if not self.readers:
            return self.outbox.prune(cluster_id, committed)
        confirmed = 0
        mark = self._mark
        if mark is not None and mark.cluster_id == cluster_id and self._read_past(mark):
            confirmed = self.outbox.prune(cluster_id, mark.committed)
            mark = None
        if mark is None or mark.cluster_id != cluster_id:
            self._mark = _Mark(cluster_id, committed, self._chunk_ends())
        return confirmed

    def _read_past(self, mark: _Mark) -> bool:
        wanted = {p: end for p, end in mark.chunk_ends.items() if end > 0}
        for reader in self.readers:
            read = reader(mark.cluster_id)
            if any(read.get(p, 0) < end for p, end in wanted.items()):
                return False
        return True

    def _chunk_ends(self) -> dict[int, int]:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from kinject.stream.clients import make_consumer

        try:
            consumer = make_consumer(self.kafka, self.bootstrap, None)
        except KafkaError as exc:
            raise BrokerError(f"cannot reach the Kafka broker at {self.bootstrap}: {exc}"
                              ) from exc
        try:
            parts = consumer.partitions_for_topic(self._chunks_topic) or set()
            tps = [TopicPartition(self._chunks_topic, p) for p in sorted(parts)]
            ends = consumer.end_offsets(tps) if tps else {}
        except KafkaError as exc:
            raise BrokerError(f"cannot read the end of {self._chunks_topic}: {exc}") from exc
        finally:
            consumer.close()
        return {tp.partition: int(off) for tp, off in ends.items()}

    def wake(self, *, full: bool = False) -> None:
        """Deliver what was just accepted now, not at the next round; ``full``: run a whole
        round now (the broker was restarted: re-send what the new cluster lacks). While the
        broker is down, a wake brings the next round forward (see WOKEN_RETRY_S)."""
        if full:
            self._failing = 0
            self._round_now = True
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Rounds every ``interval_s``, deliveries whenever woken, until ``stop`` is set or
        :meth:`close` is called (then one last round, unless the broker is down)."""
        from kafka.errors import KafkaError

        next_round = time.monotonic() + self.interval_s
        while not (stop.is_set() or self._closing.is_set()):
            # Short waits: a stop is noticed at once, whoever set it.
            try:
                if self._wake.wait(0.25):
                    self._wake.clear()
                    if self._round_now:
                        next_round = time.monotonic()
                    elif self._failing:  # the broker was down: try again soon, not at once
                        next_round = min(next_round, self._last_try + min(self.interval_s,
                                                                          WOKEN_RETRY_S))
                    else:
                        self._deliver(KafkaError)
                if stop.is_set() or self._closing.is_set():
                    break
                if time.monotonic() >= next_round:
                    self._round_now = False
                    next_round = time.monotonic() + self._round(KafkaError)
            except Exception as exc:  # never end the keeper: records would wait forever
                delay = self._failed(exc)
                next_round = time.monotonic() + delay
        if not self._failing:
            try:
                self._round(KafkaError)  # what committed during the last interval
            except Exception as exc:
                self._failed(exc)

    def close(self, timeout_s: float = 15.0) -> bool:
        """Stop the keeper after its last round and wait for its thread; True once it has
        stopped. Call it before closing the outbox or the producer it uses."""
        self._closing.set()
        self._wake.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("outbox keeper: still busy after %.0f s; closing without it", timeout_s)
            return False
        return True

    @property
    def alive(self) -> bool:
        """Whether the keeper's thread runs (False before start and after stop)."""
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> dict[str, Any]:
        """For /readyz and /metrics: whether it runs, what it did, its last error."""
        stats = self.stats
        out: dict[str, Any] = {"running": self.alive, "rounds": stats.rounds,
                               "pending": stats.pending, "failures": stats.failures,
                               "errors": stats.errors}
        if stats.last_round_at is not None:
            out["last_round_s_ago"] = round(time.time() - stats.last_round_at, 1)
        if stats.last_error:
            out["last_error"] = stats.last_error
        return out

    def _deliver(self, kafka_error: type[Exception]) -> None:
        try:
            with self.lock:
                sent = self.outbox.deliver(self.producer, grace_s=OTHERS_GRACE_S)
        except (BrokerError, kafka_error) as exc:
            log.info("outbox keeper: delivery failed (%s); the next round retries", exc)
            return
        except Exception:
            self.stats.errors += 1
            log.exception("outbox keeper: delivery failed; the next round retries")
            return
        self.stats.delivered += sent

    def _round(self, kafka_error: type[Exception]) -> float:
        """One guarded round; returns how long to wait before the next."""
        self._last_try = time.monotonic()
        try:
            confirmed, resent = self.run_once()
        except (BrokerError, kafka_error) as exc:
            self.stats.failures += 1
            self._failing += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            backoff = self._backoff()
            log.warning("outbox keeper: the broker at %s did not answer (%s); %d record(s) "
                        "wait in the outbox; next try in %.1f s", self.bootstrap, exc,
                        len(self.outbox), backoff)
            return backoff
        self._failing = 0
        if confirmed or resent:
            log.info("outbox keeper: %d confirmed, %d re-sent, %d waiting", confirmed, resent,
                     self.stats.pending)
        return self.interval_s

    def _failed(self, exc: Exception) -> float:
        """A failure that is not the broker's: logged with its traceback; the backoff."""
        self.stats.errors += 1
        self._failing += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        backoff = self._backoff()
        log.error("outbox keeper: a round failed; next try in %.1f s", backoff, exc_info=exc)
        return backoff

    def _backoff(self) -> float:
        return min(self.interval_s * 2 ** min(self._failing, 16), self.max_backoff_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run in a daemon thread named ``outbox-keeper``; returns the thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name="outbox-keeper",
                                  daemon=True)
        self._thread = thread
        thread.start()
        return thread
