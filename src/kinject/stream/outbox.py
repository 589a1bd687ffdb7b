"""A durable local outbox for records accepted by kinject's producer (SQLite, WAL, fsync).

The embedded Tansu broker keeps its log in memory: a restart forgets every record in it.
So a record accepted through :class:`~kinject.stream.producer.Producer` is first written
here, and leaves only once the ingest group has committed past it. A row moves through::

    accepted  the row is written and fsynced; the record may not have reached Kafka yet
       |      (send, broker acknowledges)
    sent      topic, partition, offset and the broker's cluster id are known
       |      (the ingest group's committed offset for that partition > offset)
    confirmed the row is deleted (pruned): a worker has made the record durable

:meth:`Outbox.republish` re-sends every row not yet known to be in the current cluster's
log: ``accepted`` rows, and ``sent`` rows whose cluster id differs (a restarted embedded
broker is a new, empty cluster). Rows are re-sent in the order they were accepted, so
per-source order holds; downstream writes are idempotent, so a re-send is always safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kinject import sqlite
from kinject.errors import BrokerError, Busy

if TYPE_CHECKING:
    from kinject.config import KafkaSettings
    from kinject.stream.producer import Producer

_log = logging.getLogger(__name__)

State = Literal["accepted", "sent"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    key         BLOB,
    value       BLOB,
    state       TEXT NOT NULL CHECK (state IN ('accepted', 'sent')),
    cluster_id  TEXT,
    partition   INTEGER,
    "offset"    INTEGER,
    accepted_at REAL NOT NULL,
    sent_at     REAL
);
CREATE INDEX IF NOT EXISTS outbox_position ON outbox (topic, partition, "offset");
"""

_COLUMNS = ('id, topic, key, value, state, cluster_id, partition, "offset", accepted_at')
# Rows read (values included) per query when re-sending: the outbox may hold 100k records
# (api.max_outbox_records) while a broker is away; reading them all at once held that much
# memory, and the lock that every accepted request needs for the whole query.
_BATCH_ROWS = 500


@dataclass(frozen=True)
class OutboxEntry:
    """One record waiting for confirmation."""

    id: int
    topic: str
    key: bytes | None
    value: bytes | None
    state: State
    cluster_id: str | None
    partition: int | None
    offset: int | None
    accepted_at: float


class Outbox(sqlite.Store):
    """The outbox file (one per data directory). Safe to share between threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # FULL: every commit is fsynced, so an accepted record survives a power cut.
        self._db = sqlite.connect(self.path, schema=_SCHEMA, synchronous="FULL", timeout=30.0,
                                  what="outbox")
        self._lock = threading.Lock()
        # rows this object accepted and has not seen sent: its own process is sending them
        self._mine: set[int] = set()

    def accept(self, topic: str, key: bytes | None, value: bytes | None) -> int:
        """Write a record durably (state ``accepted``); return its row id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, key, value, state, accepted_at) "
                "VALUES (?, ?, ?, 'accepted', ?)",
                (topic, key, value, time.time()),
            )
            assert cur.lastrowid is not None
            self._mine.add(int(cur.lastrowid))
        return int(cur.lastrowid)

    def accept_many(self, topic: str, items: list[tuple[bytes | None, bytes | None]], *,
                    max_pending: int | None = None) -> list[int]:
        """Write records durably in one transaction: all of them, or (on any error) none.

        Raises Busy, and writes nothing, when that would put more than ``max_pending``
        rows in the outbox (the broker is gone or the workers cannot keep up)."""
        now = time.time()
        with sqlite.transaction(self._db, self._lock):
            if max_pending is not None:
                held = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                if held + len(items) > max_pending:
                    raise Busy(f"the outbox holds {held:,} records waiting for the broker; "
                               f"{len(items)} more would pass its limit of {max_pending:,}")
            rows = []
            for key, value in items:
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, key, value, state, accepted_at) "
                    "VALUES (?, ?, ?, 'accepted', ?)", (topic, key, value, now))
                assert cur.lastrowid is not None
                rows.append(int(cur.lastrowid))
            self._mine.update(rows)
        return rows

    def accepted(self) -> list[OutboxEntry]:
        """Rows no broker has acknowledged yet, oldest first."""
        return list(self._batches("state='accepted'"))

    def _sendable(self, rows: Iterator[OutboxEntry], grace_s: float) -> Iterator[OutboxEntry]:
        """``rows`` less those another process accepted under ``grace_s`` seconds ago and
        may still be sending (``kinject publish`` beside serve shares its outbox: taken at
        once, each of its records was sent twice and parsed twice)."""
        if grace_s <= 0:
            yield from rows
            return
        cutoff = time.time() - grace_s
        for entry in rows:
            if entry.state != "accepted" or entry.accepted_at < cutoff or entry.id in self._mine:
                yield entry

    def deliver(self, producer: Producer, *, grace_s: float = 0.0) -> int:
        """Send the rows no broker has acknowledged yet and wait for the acknowledgements
        (no cluster check: :meth:`republish` does that); return how many were sent.
        ``grace_s``: leave another process's rows younger than that to it."""
        sent = 0
        for entry in self._sendable(self._batches("state='accepted'"), grace_s):
            producer.resend(entry)
            sent += 1
        producer.flush()
        return sent

    def lacking(self, cluster_id: str | None) -> int:
        """How many rows cluster ``cluster_id``'s log does not hold (accepted, or sent to
        another cluster); reads no record's bytes."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state='accepted' OR cluster_id IS NOT ?",
                (cluster_id,)).fetchone()[0])

    def _batches(self, where: str, params: tuple[object, ...] = ()) -> Iterator[OutboxEntry]:
        """Rows matching ``where``, oldest first, read ``_BATCH_ROWS`` at a time; the lock is
        held for each read only, never while the caller handles the rows."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE ({where}) AND id > ? ORDER BY id "
                    "LIMIT ?", (*params, last, _BATCH_ROWS)).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            yield from (OutboxEntry(*row) for row in rows)

    def mark_sent(
        self, row_id: int, cluster_id: str | None, topic: str, partition: int, offset: int
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state='sent', cluster_id=?, topic=?, partition=?, "
                '"offset"=?, sent_at=? WHERE id=?',
                (cluster_id, topic, partition, offset, time.time(), row_id),
            )
            self._mine.discard(row_id)

    def pending(self) -> list[OutboxEntry]:
        """Every row not yet confirmed, oldest first."""
        return list(self._batches("1=1"))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def prune(self, cluster_id: str | None, committed: Mapping[tuple[str, int], int]) -> int:
        """Delete ``sent`` rows of ``cluster_id`` whose partition's committed offset is past
        them; ``committed`` maps (topic, partition) to the group's committed offset."""
        pruned = 0
        with sqlite.transaction(self._db, self._lock):
            for (topic, partition), offset in committed.items():
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE state='sent' AND cluster_id IS ? AND topic=? "
                    'AND partition=? AND "offset" < ?',
                    (cluster_id, topic, partition, offset),
                )
                pruned += cur.rowcount
        if pruned:
            _log.info("outbox: %d record(s) confirmed by the ingest group and pruned", pruned)
        return pruned

    def confirm(self, kafka: KafkaSettings, bootstrap: str, group_id: str | None = None) -> int:
        """Ask the broker how far the ingest group (``<prefix>-ingest`` unless ``group_id``
        is given) has committed and prune what it has passed."""
        if group_id is None:
            from kinject.stream.topics import Topics

            group_id = Topics.from_settings(kafka).ingest_group
        cluster_id, committed = committed_offsets(kafka, bootstrap, group_id)
        return self.prune(cluster_id, committed)

    def republish(self, producer: Producer, *, everything: bool = False,
                  grace_s: float = 0.0) -> int:
        """Re-send rows that the current cluster's log does not hold (all rows not yet
        confirmed with ``everything``); return how many were sent. ``grace_s``: leave rows
        another process accepted less than that ago to it (see :meth:`deliver`).

        The producer first asks the broker which cluster it is, so a long-lived process can
        call this whenever it suspects a restart (a send failed, the broker was gone)."""
        producer.refresh_cluster_id()
        current = producer.cluster_id
        rows = (self._batches("1=1") if everything else self._sendable(
            self._batches("state='accepted' OR cluster_id IS NOT ?", (current,)), grace_s))
        sent = 0
        for entry in rows:
            producer.resend(entry)
            sent += 1
        producer.flush()
        if sent:
            _log.info("outbox: re-sent %d record(s) to cluster %s", sent, current)
        return sent

    def __repr__(self) -> str:
        return f"Outbox({self.path})"


def committed_offsets(
    kafka: KafkaSettings, bootstrap: str, group_id: str
) -> tuple[str | None, dict[tuple[str, int], int]]:
    """The broker's cluster id and ``group_id``'s committed offsets per (topic, partition)."""
    from kafka.errors import KafkaError

    from kinject.stream.clients import make_admin

    try:
        admin = make_admin(kafka, bootstrap)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from exc
    try:
        cluster_id = admin.describe_cluster().get("cluster_id")
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
    except KafkaError as exc:
        raise BrokerError(f"cannot read the committed offsets of {group_id}: {exc}") from exc
    finally:
        admin.close()
    committed = {
        (tp.topic, tp.partition): int(meta.offset)
        for tp, meta in offsets.items()
        if meta.offset is not None and meta.offset >= 0
    }
    return cluster_id, committed
