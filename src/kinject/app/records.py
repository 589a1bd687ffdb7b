"""What happened to records: lineage and recent updates of the replica, conflicts between
sources, the durable dead-letter store (mirrored from and replayed to the broker) and the
fine-tuning corpus the records fill."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from kinject.app.replica import Replica
from kinject.config import Settings
from kinject.errors import BrokerError, KinjectError, NotFound

if TYPE_CHECKING:
    from kinject.finetune.corpus import CorpusStore
    from kinject.stream.dlq_store import DeadLetterStore

log = logging.getLogger(__name__)

# Where the text index and its docstore live in the data dir (index/text_index.py), for the
# read-only views that open no index.
TEXT_INDEX_DIR = "index"
DOCSTORE_FILE = "docstore.sqlite"


class Records:
    """The replica's record history plus the small stores of the data dir, opened on use."""

    def __init__(self, settings: Settings, replica: Replica) -> None:
        self.settings = settings
        self._replica = replica
        # Opening the small stores (dead letters, corpus) on first use: never waits on a model.
        self._stores_lock = threading.Lock()
        self._dlq: DeadLetterStore | None = None
        self._corpus: CorpusStore | None = None  # opened for status on demand

    def close(self) -> None:
        self.close_dead_letters()
        if self._corpus is not None:
            self._corpus.close()
            self._corpus = None

    def close_dead_letters(self) -> None:
        if self._dlq is not None:
            try:
                self._dlq.close()
            except KinjectError as exc:
                log.warning("closing %r: %s", self._dlq, exc)
            self._dlq = None

    # -- the replica's history ----------------------------------------------------------------
    def lineage(self, source_id: str) -> dict[str, Any]:
        """Where a source came from and what it became: Kafka positions, chunks, adapters."""
        docstore = self._replica.docstore()
        events = docstore.lineage(source_id)
        if not events:
            raise NotFound(f"no source {source_id!r} has reached this index")
        from kinject.index.visibility import hidden_chunks

        return {"source_id": source_id, "events": events,
                "chunks_now": events[-1]["chunk_ids"] if events[-1]["op"] == "upsert" else [],
                # chunks kept but not searched: duplicates of another source's chunk, rows
                # superseded by a newer conflicting one (see `kinject conflicts`)
                "hidden": hidden_chunks(docstore, source_id)}

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest updates this index applied (source id, op, Kafka position, time)."""
        return self._replica.docstore().recent_lineage(limit)

    def conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Contradictions between structured sources (of ``entity`` when given): every
        value with its source, chunk and record time, newest first (the one searched)."""
        from kinject.index.conflicts import store_conflicts

        return [c.to_dict() for c in store_conflicts(self._replica.docstore(), entity)]

    def stored_conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        """What conflicts() lists, read from the data dir's docstore file without opening
        the index (no model loads); empty when no index was built here."""
        from kinject.index.conflicts import read_conflicts

        path = self.settings.data_dir / TEXT_INDEX_DIR / DOCSTORE_FILE
        return [c.to_dict() for c in read_conflicts(path, entity)]

    # -- dead letters -------------------------------------------------------------------------
    def dead_letter_store(self) -> DeadLetterStore:
        """The durable dead-letter store of this data directory (opened on first use)."""
        from kinject.stream.dlq_store import open_dead_letter_store

        with self._stores_lock:
            if self._dlq is None:
                self._dlq = open_dead_letter_store(self.settings.data_dir)
            return self._dlq

    def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest ``limit`` dead letters (from the durable store), newest last."""
        letters = self.dead_letter_store().latest(limit) if limit > 0 else []
        return [d.to_dict() for d in letters]

    def dead_letter_count(self) -> int:
        return self.dead_letter_store().count()

    def mirror_dead_letters(self, timeout_s: float = 30.0) -> int:
        """Copy into the durable dead-letter store what only the configured broker's
        ``kinject.dlq`` topic holds; returns how many were new. Raises BrokerError when the
        broker does not answer."""
        from kinject.stream.broker import connect
        from kinject.stream.publish import require_bootstrap

        require_bootstrap(self.settings)
        with connect(self.settings.kafka, timeout_s=timeout_s) as bootstrap:
            return self._mirror_dead_letters(bootstrap)

    def _mirror_dead_letters(self, bootstrap: str) -> int:
        from kafka.errors import KafkaError

        from kinject.stream.clients import ClusterWatch
        from kinject.stream.dlq import read_dead_letters

        watch = ClusterWatch(self.settings.kafka, bootstrap)
        try:
            cluster = watch.cluster_id()
        except KafkaError as exc:
            raise BrokerError(f"cannot ask {bootstrap} which cluster it is: {exc}") from exc
        finally:
            watch.close()
        return self.dead_letter_store().mirror(read_dead_letters(self.settings.kafka,
                                                                 bootstrap), cluster)

    def replay_dead_letters(self, letter_id: str | None = None, *,
                            include_replayed: bool = False) -> tuple[list[str], str]:
        """Re-publish dead letters' original bytes to the records topic, after mirroring
        the broker's: the one with ``letter_id``, or (None) every one not replayed before
        (all of them with ``include_replayed``). Returns what was sent and the topic."""
        from kinject.stream.broker import connect
        from kinject.stream.dlq import drop_superseded, find_dead_letter, replay, replayable
        from kinject.stream.outbox import Outbox
        from kinject.stream.producer import Producer
        from kinject.stream.publish import OUTBOX_FILE, require_bootstrap

        require_bootstrap(self.settings)
        with connect(self.settings.kafka) as bootstrap:
            store = self.dead_letter_store()
            self._mirror_dead_letters(bootstrap)
            letters = store.latest()
            chosen = ([d for d in letters if include_replayed or d.replayed_at is None]
                      if letter_id is None else [find_dead_letter(letters, letter_id)])
            if letter_id is None:  # a letter asked for by id is replayed as asked
                chosen = drop_superseded(
                    chosen, self.settings.data_dir / TEXT_INDEX_DIR / DOCSTORE_FILE)
            with (Outbox(self.settings.data_dir / OUTBOX_FILE) as outbox,
                  Producer(self.settings.kafka, bootstrap, outbox) as producer):
                sent = replay(producer, chosen)
                topic: str = producer.topic
            store.mark_replayed(d.row for d in chosen if d.row is not None and replayable(d))
        return sent, topic

    # -- the fine-tuning corpus ---------------------------------------------------------------
    def corpus_store(self) -> CorpusStore | None:
        """The data dir's CorpusStore (opened on first use), or None before anything has
        reached it."""
        from kinject.finetune.jobs import corpus_path

        with self._stores_lock:
            if self._corpus is None:
                path = corpus_path(self.settings.data_dir)
                if not path.is_file():
                    return None
                from kinject.finetune.corpus import CorpusStore

                self._corpus = CorpusStore(path)
            return self._corpus

    def corpus_status(self) -> dict[str, int] | None:
        """The fine-tuning corpus of the data dir (CorpusStore.summary: examples, sources,
        cycle, pending); None before anything has reached it."""
        import sqlite3

        try:
            corpus = self.corpus_store()
            if corpus is None:
                return None
            summary: dict[str, int] = corpus.summary()
        except sqlite3.Error as exc:  # a status page must not fail on it
            log.warning("corpus figures unavailable: %s", exc)
            return None
        return summary
