"""Readiness (/readyz) and the figures of /metrics and the web page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kinject.app.broker_link import BrokerLink
from kinject.app.records import Records
from kinject.app.replica import Replica
from kinject.errors import KinjectError

log = logging.getLogger(__name__)


class Readiness:
    """Whether this replica may take traffic, and how far behind it and the broker are.

    ``models_loaded`` and ``adapter_version`` are asked on each call.
    """

    def __init__(self, replica: Replica, link: BrokerLink, records: Records,
                 models_loaded: Callable[[], bool],
                 adapter_version: Callable[[], str | None]) -> None:
        self._replica = replica
        self._link = link
        self._records = records
        self._models_loaded = models_loaded
        self._adapter_version = adapter_version
        self._caught_up = False

    def chunks_lag(self) -> dict[int, int]:
        """{partition of kinject.chunks: updates this replica has not applied yet}."""
        status = self._link.broker_status()
        topic = status.topics.chunks
        ends = status.end_offsets(topic)
        applied = self._replica.index.applied_offsets(topic)
        return {p: max(e - applied.get(p, 0), 0) for p, e in ends.items()}

    def ready(self) -> dict[str, Any]:
        """Readiness: the models are loaded, the index has caught up with kinject.chunks (once
        caught up, a replica stays ready while it keeps applying) and, where this process runs
        the embedded broker, that broker is up (its supervisor restarts it).

        An external broker's trouble (down, slow to answer) is reported in the checks but does
        not make a replica not ready: search and ask run from the local index, and a Kafka
        blip would otherwise take every replica out of its load balancer at once."""
        checks: dict[str, Any] = {"models_loaded": self._models_loaded()}
        embedded_up = self._link.broker_alive()
        if self._link.supervisor is not None:
            checks["embedded_broker"] = self._link.supervisor.state()
        if (keeper := self._link.outbox_keeper_state()) is not None:  # reported, not a gate
            checks["outbox_keeper"] = keeper
        broker_ok = embedded_up
        if embedded_up:
            try:
                lag = sum(self.chunks_lag().values())
                checks["chunks_lag"] = lag
                if lag == 0:
                    self._caught_up = True
            except KinjectError as exc:
                broker_ok = False
                checks["broker"] = str(exc)
        else:
            checks["broker"] = "the embedded broker is down; it is being restarted"
        checks["broker_ok"] = broker_ok
        checks["index_caught_up"] = self._caught_up
        ready = bool(checks["models_loaded"] and self._caught_up and embedded_up)
        return {"ready": ready, "checks": checks}

    def stats(self) -> dict[str, Any]:
        """Figures for /metrics and the web page; a part the broker cannot answer is None.
        ``corpus_lag``: chunk events the group of this data dir's corpus store (the `kinject
        serve`, `worker` and `finetune schedule` processes that fill it) has not committed,
        per partition."""
        import sqlite3

        out: dict[str, Any] = {"index_chunks": len(self._replica.index),
                               "adapter_version": self._adapter_version(),
                               "ingest_lag": None, "chunks_lag": None, "dlq_count": None,
                               "corpus": self._records.corpus_status(), "corpus_lag": None}
        status = self._link.status
        if status is None:
            return out
        out["dlq_count"] = self._records.dead_letter_count()
        if not self._link.broker_alive():
            return out
        try:
            out["ingest_lag"] = status.ingest_lag()
            out["chunks_lag"] = self.chunks_lag()
            corpus = self._records.corpus_store()
            out["corpus_lag"] = status.corpus_lag(
                corpus.store_id if corpus is not None else None)
        except KinjectError as exc:
            log.warning("broker figures unavailable: %s", exc)
        except sqlite3.Error as exc:  # a status page must not fail on it
            log.warning("corpus figures unavailable: %s", exc)
        return out
