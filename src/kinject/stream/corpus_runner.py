"""The corpus materialiser as the processes users start run it.

`kinject serve`, `kinject worker` and `kinject finetune schedule` each run one
:class:`~kinject.stream.corpus_materialiser.CorpusMaterialiser` in a thread, writing the
corpus store of their data dir (``<data dir>/corpus/corpus.sqlite3``; in compose a volume the
services share), in the consumer group of that store (``<prefix>-corpus-<store id>``, the id
a UUID kept in the store): however many processes write one store, Kafka gives each
partition of kinject.chunks to one of them, so the work is shared and never done twice; a
process on another host with a data dir of its own has another store, so another group, and
its corpus gets every event (not the half its neighbours left over). A delete that reaches
the corpus taints the adapters trained on the source
(:func:`kinject.finetune.jobs.deletion_hook`), and a serving adapter that is tainted falls
back at once, announced on kinject.adapters.

``finetune.materialise_corpus = false`` (``KINJECT_FINETUNE__MATERIALISE_CORPUS``) turns it
off in a process, for example an API replica on another host that trains nothing (it would
otherwise keep a whole corpus of its own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kinject.config import Settings

if TYPE_CHECKING:
    from kinject.stream.corpus_materialiser import CorpusMaterialiser

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 2.0


class CorpusRunner(threading.Thread):
    """A daemon thread that fills the data dir's corpus from kinject.chunks until ``stop``,
    reconnecting when the broker is lost and starting over after any other failure."""

    def __init__(self, settings: Settings, bootstrap: str, stop: threading.Event) -> None:
        super().__init__(name="kinject-corpus", daemon=True)
        self.settings = settings
        self.bootstrap = bootstrap
        self.stop_event = stop
        self.materialiser: CorpusMaterialiser | None = None
        self._applied_before = 0  # by the materialisers of earlier attempts

    @property
    def applied(self) -> int:
        """Chunk events this runner has written to the corpus."""
        mat = self.materialiser
        return self._applied_before + (mat.applied if mat is not None else 0)

    @property
    def ready(self) -> bool:
        """Whether the group has given this runner partitions (it may have none: a group
        with more members than partitions keeps the others idle)."""
        mat = self.materialiser
        return mat is not None and mat.ready.is_set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._materialise()
            except Exception as exc:  # a store or client failure: try again, loudly
                log.error("the corpus materialiser failed (%s); restarting in %.0f s", exc,
                          RESTART_BACKOFF_S)
                self.stop_event.wait(RESTART_BACKOFF_S)

    def _materialise(self) -> None:
        from kinject.finetune.corpus import CorpusStore
        from kinject.finetune.jobs import corpus_path, deletion_hook
        from kinject.stream.adapter_events import kafka_announcer
        from kinject.stream.corpus_materialiser import CorpusMaterialiser
        from kinject.stream.dlq_store import open_dead_letter_store

        settings = self.settings
        with (CorpusStore(corpus_path(settings.data_dir)) as store,
              open_dead_letter_store(settings.data_dir) as dlq_store):
            if self.materialiser is not None:
                self._applied_before += self.materialiser.applied
            self.materialiser = mat = CorpusMaterialiser(
                settings.kafka, self.bootstrap, store,
                on_delete=deletion_hook(
                    settings, announce=kafka_announcer(settings, self.bootstrap)),
                dlq_store=dlq_store)
            log.info("corpus materialiser in group %s on %s -> %s", mat.group_id,
                     self.bootstrap, store.path)
            mat.run(self.stop_event)


def start_corpus_materialiser(settings: Settings, bootstrap: str, stop: threading.Event
                              ) -> CorpusRunner | None:
    """A started :class:`CorpusRunner`, or None (nothing started) when
    ``finetune.materialise_corpus`` is off."""
    if not settings.finetune.materialise_corpus:
        log.info("corpus materialiser off (KINJECT_FINETUNE__MATERIALISE_CORPUS=false): "
                 "another process fills the corpus")
        return None
    runner = CorpusRunner(settings, bootstrap, stop)
    runner.start()
    return runner


@contextmanager
def corpus_materialiser(settings: Settings) -> Iterator[CorpusRunner | None]:
    """The materialiser for the life of the block, on the configured broker (for a process
    with no broker of its own, like ``kinject finetune schedule``). With no bootstrap
    servers configured there is no log to read: the corpus is whatever `kinject serve` or
    `kinject worker` on this data dir write into it."""
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        log.info("no Kafka bootstrap servers configured: this process does not fill the "
                 "corpus (kinject serve / worker on this data dir do)")
        yield None
        return
    stop = threading.Event()
    thread = start_corpus_materialiser(settings, bootstrap, stop)
    try:
        yield thread
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
