"""The broker a serving process attached (kinject serve, the API): publishing through the
outbox, the outbox keeper, the broker's figures and the embedded broker's supervisor."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import BrokerError, KinjectError
from kinject.types import Record

if TYPE_CHECKING:
    from kinject.stream.lag import BrokerStatus
    from kinject.stream.outbox import Outbox
    from kinject.stream.outbox_keeper import ChunkReader, OutboxKeeper
    from kinject.stream.producer import Producer
    from kinject.stream.supervisor import BrokerSupervisor

log = logging.getLogger(__name__)


class BrokerLink:
    """Nothing attached until attach(); detach() closes what it opened."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bootstrap: str | None = None
        self._producer: Producer | None = None
        self.outbox: Outbox | None = None
        self.status: BrokerStatus | None = None
        self._publish_lock = threading.Lock()
        self._keeper: OutboxKeeper | None = None
        self.supervisor: BrokerSupervisor | None = None

    def attach(self, bootstrap: str, supervisor: BrokerSupervisor | None = None) -> None:
        """Use the broker at ``bootstrap`` for publish, dlq and status (closed by close()).

        ``supervisor``: the embedded broker's, whose state /readyz reports; after each
        restart the outbox keeper re-sends at once what the new (empty) broker lacks."""
        from kinject.stream.lag import BrokerStatus
        from kinject.stream.outbox import Outbox
        from kinject.stream.producer import Producer
        from kinject.stream.publish import OUTBOX_FILE

        self.detach()
        self.bootstrap = bootstrap
        self.outbox = Outbox(self.settings.data_dir / OUTBOX_FILE)
        self._producer = Producer(self.settings.kafka, bootstrap, self.outbox)
        self.status = BrokerStatus(self.settings.kafka, bootstrap)
        self.supervisor = supervisor
        if supervisor is not None:
            supervisor.on_restart(self._broker_restarted)

    def _broker_restarted(self) -> None:
        if self._keeper is not None:
            self._keeper.wake(full=True)

    def detach(self) -> None:
        if self._keeper is not None:  # its last round still uses the producer and outbox
            self._keeper.close()
        if self._producer is not None:
            try:  # briefly: what is not acknowledged stays in the outbox for the next start
                self._producer.close(timeout_s=2.0)
            except KinjectError as exc:
                log.warning("closing the producer: %s", exc)
        parts: tuple[Outbox | BrokerStatus | None, ...] = (self.outbox, self.status)
        for part in parts:
            if part is not None:
                try:
                    part.close()
                except KinjectError as exc:
                    log.warning("closing %r: %s", part, exc)
        self._producer = self.outbox = self.status = self.bootstrap = None
        self._keeper = self.supervisor = None

    def require_broker(self) -> str:
        if self.bootstrap is None:
            raise BrokerError("no broker attached: run `kinject serve`, or call attach()")
        return self.bootstrap

    def _attached(self) -> tuple[Producer, Outbox]:
        self.require_broker()
        assert self._producer is not None and self.outbox is not None
        return self._producer, self.outbox

    def broker_status(self) -> BrokerStatus:
        self.require_broker()
        assert self.status is not None
        return self.status

    def broker_alive(self) -> bool:
        """False when the embedded broker is known to be dead (no need to ask it)."""
        return self.supervisor is None or self.supervisor.running

    def publish(self, records: Sequence[Record]) -> list[str]:
        """Accept records durably (the outbox), all or none; return their ids.

        Every record is validated (encoded, size-checked) before any is written, and all
        are written in one transaction: a batch with one bad record leaves nothing behind.
        With an outbox keeper running (``kinject serve``) this never waits on the broker:
        the keeper sends them at once, or re-sends them once a lost broker is back. Raises
        BadRecord (nothing accepted) or Busy when the outbox is full.
        """
        from kinject.stream.producer import encode_message

        producer, outbox = self._attached()
        limit = producer.max_record_bytes
        messages: list[tuple[bytes | None, bytes | None]] = [
            encode_message(r, limit) for r in records]
        rows = outbox.accept_many(producer.topic, messages,
                                  max_pending=self.settings.api.max_outbox_records)
        if self._keeper is not None:
            self._keeper.wake()
        else:  # no keeper (a library user): send now and wait for the acknowledgement
            with self._publish_lock:
                try:
                    outbox.deliver(producer)
                except BrokerError as exc:
                    log.warning("records accepted but not yet acknowledged: %s", exc)
        return [f"outbox:{row}" for row in rows]

    def outbox_keeper(self, interval_s: float = 5.0,
                      readers: Sequence[ChunkReader] = ()) -> OutboxKeeper:
        """A keeper that prunes what the ingest group committed (and ``readers`` of the
        chunks topic have read) and re-sends what a broker lost, sharing this service's
        producer lock (start it with ``.start(stop)``)."""
        from kinject.stream.outbox_keeper import OutboxKeeper

        bootstrap = self.require_broker()
        producer, outbox = self._attached()
        self._keeper = OutboxKeeper(outbox, producer, self.settings.kafka,
                                    bootstrap, interval_s, lock=self._publish_lock,
                                    readers=readers)
        return self._keeper

    def outbox_keeper_state(self) -> dict[str, Any] | None:
        """Whether the outbox keeper runs and what it did (None: no keeper)."""
        return None if self._keeper is None else self._keeper.state()
