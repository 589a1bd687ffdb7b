"""``Kinject``: the one facade between the edges (CLI, API) and the core, composed of the
parts in this package: a local replica of the index that catches up from ``kinject.chunks``
and is searched (Replica), answering over it (Answering), adapters and fine-tuning jobs
(Finetuning), the attached broker (BrokerLink), record history and dead letters (Records),
readiness and figures (Readiness). Every method here hands over to one of them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kinject.app.adapters import Adapters
from kinject.app.answering import Answering
from kinject.app.broker_link import BrokerLink
from kinject.app.readiness import Readiness
from kinject.app.records import Records
from kinject.app.replica import Replica
from kinject.config import Settings
from kinject.types import Answer, Hit, Record

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import numpy as np

    from kinject.finetune.archive import AdapterArchive
    from kinject.finetune.serving import ServingGenerator
    from kinject.index.filters import SearchFilters
    from kinject.index.image_index import ImageHit, ImageIndex
    from kinject.index.text_index import TextIndex
    from kinject.protocols import Tokenizer
    from kinject.rag.generate import Sampling
    from kinject.stream.dlq_store import DeadLetterStore
    from kinject.stream.outbox_keeper import ChunkReader, OutboxKeeper
    from kinject.stream.supervisor import BrokerSupervisor

# How long close() waits for the fine-tuning cycles it cancels: a training step or a batch of
# the gate, seconds on the CPU with the default model.
JOBS_STOP_WAIT_S = 10.0


class Kinject:
    """Open with ``with Kinject(settings) as svc:``; models load on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.replica = Replica(settings)
        # Serving (kinject serve, the API): a broker attached with attach().
        self.broker = BrokerLink(settings)
        self.finetuning = Adapters(settings, bootstrap=lambda: self.broker.bootstrap)
        self.answering = Answering(settings, self.replica, self.finetuning)
        self.records = Records(settings, self.replica)
        self.readiness = Readiness(self.replica, self.broker, self.records,
                                   models_loaded=lambda: self.models_loaded,
                                   adapter_version=self.finetuning.adapter_version)

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> Kinject:
        self.replica.open()
        return self

    def close(self) -> None:
        self.stop_finetune_jobs(JOBS_STOP_WAIT_S)
        self.detach()
        self.records.close()
        self.replica.close()

    def __enter__(self) -> Kinject:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> TextIndex:
        return self.replica.index

    @property
    def images(self) -> ImageIndex | None:
        """The CLIP image index, or None when it is off (no checkpoint configured)."""
        return self.replica.images

    # -- replica and search -------------------------------------------------------------------
    def sync(self, idle_s: float = 1.0, timeout_s: float = 120.0) -> int:
        """Apply what ``kinject.chunks`` holds beyond this replica's stored offsets."""
        return self.replica.sync(idle_s, timeout_s)

    def search(self, query: str, k: int = 5, filters: SearchFilters | Iterable[str] | None = None,
               mode: str | None = None) -> list[Hit]:
        """Ranked chunks for ``query`` (see Replica.search)."""
        return self.replica.search(query, k, filters, mode)

    def search_images(self, query_text: str | None = None, image_bytes: bytes | None = None,
                      k: int = 5) -> list[ImageHit]:
        """Images for a text or like an image, best first (see Replica.search_images)."""
        return self.replica.search_images(query_text, image_bytes, k)

    # -- answering ----------------------------------------------------------------------------
    def ask(self, question: str, k: int | None = None,
            filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
            model: str | None = None, sampling: Sampling | None = None,
            context: Sequence[str] = ()) -> Answer:
        """Answer from the index with citations (see Answering.ask)."""
        return self.answering.ask(question, k, filters, route, model, sampling, context)

    def ask_stream(self, question: str, k: int | None = None,
                   filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
                   model: str | None = None, sampling: Sampling | None = None,
                   context: Sequence[str] = ()) -> Iterator[str | Answer]:
        """The answer's text in pieces as it is generated, then the final Answer."""
        return self.answering.ask_stream(question, k, filters, route, model, sampling,
                                         context)

    def tokenizer(self) -> Tokenizer:
        return self.answering.tokenizer()

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return self.answering.embed(texts)

    def warm_up(self) -> None:
        """Load what the first search loads (the BM25 tokenizer, the embedders' first
        encode), then the generator (and in read mode the reader), now, not on the first
        request (Haystack's warm_up)."""
        self.replica.warm_up()
        self.answering.warm_up()

    @property
    def models_loaded(self) -> bool:
        """Whether a search and a question load nothing more (what /readyz waits for)."""
        return self.replica.warm and self.answering.loaded

    # -- adapters and fine-tuning jobs --------------------------------------------------------
    def follow_adapters(self, stop: threading.Event) -> threading.Thread:
        """Follow adapter changes in a thread until ``stop``: the ACTIVE pointer and the
        events on kinject.adapters of the attached broker. A promotion is loaded (and its
        bytes checked against the announced sha256) before a request needs it; a copy that
        fails the check is refused and the version served before goes on serving."""
        self.answering.rag_service()
        return self.finetuning.follow(stop)

    def generator_for(self, version: str | None = "active") -> ServingGenerator:
        """A generator bound to one adapter version, for a request that names it (a
        /v1/chat/completions model name): ``"active"`` follows promotions, None is the base
        model. Raises NotFound for an unknown version, AdapterLoadError for a tainted one."""
        self.answering.rag_service()
        return self.finetuning.generator_for(version)

    def adapters(self) -> list[dict[str, Any]]:
        return self.finetuning.adapters()

    def adapter(self, version: str) -> dict[str, Any]:
        return self.finetuning.adapter(version)

    def adapter_archive(self, version: str) -> AdapterArchive:
        return self.finetuning.adapter_archive(version)

    def activate(self, version: str | None) -> dict[str, Any]:
        return self.finetuning.activate(version)

    def rollback(self) -> dict[str, Any]:
        return self.finetuning.rollback()

    def adapter_version(self) -> str | None:
        return self.finetuning.adapter_version()

    def adapter_versions(self) -> list[str]:
        return self.finetuning.adapter_versions()

    def adapter_listing(self) -> tuple[str | None, list[dict[str, Any]]]:
        return self.finetuning.adapter_listing()

    def adapter_manifest(self, version: str) -> dict[str, Any]:
        return self.finetuning.adapter_manifest(version)

    def start_finetune_job(self) -> dict[str, Any]:
        return self.finetuning.start_finetune_job()

    def stop_finetune_jobs(self, timeout_s: float) -> list[str]:
        return self.finetuning.stop_finetune_jobs(timeout_s)

    def finetune_job(self, job_id: str) -> dict[str, Any]:
        return self.finetuning.finetune_job(job_id)

    def finetune_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.finetuning.finetune_jobs(limit)

    # -- serving: the attached broker ---------------------------------------------------------
    def attach(self, bootstrap: str, supervisor: BrokerSupervisor | None = None) -> None:
        """Use the broker at ``bootstrap`` for publish, dlq and status (closed by close())."""
        self.detach()
        self.broker.attach(bootstrap, supervisor)

    def detach(self) -> None:
        self.broker.detach()
        self.records.close_dead_letters()

    def publish(self, records: Sequence[Record]) -> list[str]:
        """Accept records durably (the outbox), all or none; return their ids."""
        return self.broker.publish(records)

    def outbox_keeper(self, interval_s: float = 5.0,
                      readers: Sequence[ChunkReader] = ()) -> OutboxKeeper:
        return self.broker.outbox_keeper(interval_s, readers)

    def outbox_keeper_state(self) -> dict[str, Any] | None:
        return self.broker.outbox_keeper_state()

    # -- records, dead letters and readiness --------------------------------------------------
    def lineage(self, source_id: str) -> dict[str, Any]:
        return self.records.lineage(source_id)

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.records.recent(limit)

    def conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        return self.records.conflicts(entity)

    def stored_conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        return self.records.stored_conflicts(entity)

    def dead_letter_store(self) -> DeadLetterStore:
        return self.records.dead_letter_store()

    def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.records.dead_letters(limit)

    def dead_letter_count(self) -> int:
        return self.records.dead_letter_count()

    def mirror_dead_letters(self, timeout_s: float = 30.0) -> int:
        return self.records.mirror_dead_letters(timeout_s)

    def replay_dead_letters(self, letter_id: str | None = None, *,
                            include_replayed: bool = False) -> tuple[list[str], str]:
        return self.records.replay_dead_letters(letter_id, include_replayed=include_replayed)

    def corpus_status(self) -> dict[str, int] | None:
        return self.records.corpus_status()

    def chunks_lag(self) -> dict[int, int]:
        return self.readiness.chunks_lag()

    def ready(self) -> dict[str, Any]:
        return self.readiness.ready()

    def stats(self) -> dict[str, Any]:
        return self.readiness.stats()


# The facade's name before the app/ package; every existing caller keeps working.
KinjectService = Kinject
