"""The one facade between the edges (CLI, API) and the core: a local replica of the index
that catches up from ``kinject.chunks``, searches it and answers questions over it."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import BrokerError, IndexFailure, KinjectError, NotFound
from kinject.types import Answer, Hit, Record

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from kinject.index.docstore import Docstore
    from kinject.index.filters import SearchFilters
    from kinject.index.image_index import ImageHit, ImageIndex
    from kinject.index.text_index import TextIndex
    from kinject.rag.generate import Sampling
    from kinject.stream.dlq_store import DeadLetterStore
    from kinject.stream.outbox_keeper import OutboxKeeper
    from kinject.stream.supervisor import BrokerSupervisor

log = logging.getLogger(__name__)

# How long close() waits for the fine-tuning cycles it cancels: a training step or a batch of
# the gate, seconds on the CPU with the default model.
JOBS_STOP_WAIT_S = 10.0


class KinjectService:
    """Open with ``with KinjectService(settings) as svc:``; models load on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._index: TextIndex | None = None
        # The CLIP image index, None while KINJECT_MODELS__CLIP_CHECKPOINT is unset.
        self._images: ImageIndex | None = None
        self._rag: Any = None
        # Held while a model loads (the generator at warm-up, an adapter on first use): tens
        # of seconds. Nothing a status page, /metrics or /readyz needs takes it; a model
        # already loaded is read without it (published only once built).
        self._lock = threading.Lock()
        # Opening the small stores (dead letters, corpus) on first use: never waits on a model.
        self._stores_lock = threading.Lock()
        # Serving (kinject serve, the API): a broker attached with attach().
        self._bootstrap: str | None = None
        self._producer: Any = None
        self._outbox: Any = None
        self._status: Any = None
        self._publish_lock = threading.Lock()
        self._keeper: OutboxKeeper | None = None
        self._supervisor: BrokerSupervisor | None = None
        self._dlq: DeadLetterStore | None = None
        self._caught_up = False
        self._reader_obj: Any = None
        self._reader_lock = threading.Lock()  # not self._lock: a first load takes minutes
        self._corpus: Any = None  # the data dir's CorpusStore, opened for status on demand
        from kinject.finetune.jobs import JobThreads

        self._jobs = JobThreads()  # the cycles start_finetune_job started, stopped by close()

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> KinjectService:
        from kinject.index.text_index import text_index_from_settings

        self._index = text_index_from_settings(self.settings).open()
        self._images = self._open_images()
        return self

    def _open_images(self) -> ImageIndex | None:
        from kinject.index.clip_embedder import make_clip_embedder
        from kinject.index.image_index import ImageIndex

        m = self.settings.models
        clip = make_clip_embedder(m.clip_model, m.clip_checkpoint, device=m.device)
        if clip is None:
            return None
        return ImageIndex(self.index.directory, clip).open()

    def close(self) -> None:
        self.stop_finetune_jobs(JOBS_STOP_WAIT_S)
        self.detach()
        if self._corpus is not None:
            self._corpus.close()
            self._corpus = None
        if self._images is not None:
            self._images.close()
            self._images = None
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> KinjectService:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> TextIndex:
        if self._index is None:
            raise RuntimeError("KinjectService is not open; use it as a context manager")
        return self._index

    # -- catching up --------------------------------------------------------------------------
    def sync(self, idle_s: float = 1.0, timeout_s: float = 120.0) -> int:
        """Apply what ``kinject.chunks`` holds beyond this replica's stored offsets.

        Stops once the topic has been quiet for ``idle_s``; returns the updates applied. Needs
        configured bootstrap servers: an embedded broker started here would be empty.
        """
        from kinject.stream.clients import wait_until_reachable
        from kinject.stream.materialiser import IndexMaterialiser

        bootstrap = self.settings.kafka.bootstrap_servers
        if not bootstrap:
            raise BrokerError("nothing to sync from: set KINJECT_KAFKA__BOOTSTRAP_SERVERS to the "
                              "broker your workers publish to (or search without syncing)")
        wait_until_reachable(bootstrap, timeout_s=10, kafka=self.settings.kafka)
        mat = IndexMaterialiser(self.settings.kafka, bootstrap, self.index, images=self._images)
        mat.start()
        applied, quiet_since = 0, time.monotonic()
        deadline = time.monotonic() + timeout_s
        # Read at least up to the end the broker reports now (a slow first fetch must not
        # look like a quiet topic), then until the topic has been quiet for idle_s.
        consumer = mat._consumer
        parts = list(consumer.assignment())
        ends = consumer.end_offsets(parts) if parts else {}

        def behind() -> bool:
            return any(consumer.position(tp) < end for tp, end in ends.items())

        try:
            while time.monotonic() < deadline and (
                    behind() or time.monotonic() - quiet_since < idle_s):
                n = mat.poll_once(timeout_ms=200)
                if n:
                    applied += n
                    quiet_since = time.monotonic()
        finally:
            mat.close()
        log.info("synced %d update(s) from %s; the index holds %d chunks", applied,
                 bootstrap, len(self.index))
        return applied

    # -- queries ------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, filters: SearchFilters | Iterable[str] | None = None,
               mode: str | None = None) -> list[Hit]:
        """Ranked chunks for ``query``; ``filters`` as SearchFilters or ``key=value`` strings;
        ``mode`` hybrid|vector|bm25 (default: the ``index.search_mode`` setting)."""
        from kinject.index.filters import SearchFilters

        query = query.strip()
        if not query:
            raise ValueError("query must not be empty")
        flt = SearchFilters.coerce(filters)
        return self.index.search(query, k, flt, mode or self.settings.index.search_mode)

    @property
    def images(self) -> ImageIndex | None:
        """The CLIP image index, or None when it is off (no checkpoint configured)."""
        return self._images

    def search_images(self, query_text: str | None = None, image_bytes: bytes | None = None,
                      k: int = 5) -> list[ImageHit]:
        """Images for a text (text->image) or like an image (image->image), best first.

        With the image index off, a text query still finds images through the chunks of
        their captions and OCR text; an image query then raises ConfigError.
        """
        from kinject.errors import ConfigError

        if (query_text is None or not query_text.strip()) == (image_bytes is None):
            raise ValueError("give exactly one of query_text (non-empty) or image_bytes")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if self._images is not None:
            if image_bytes is not None:
                return self._images.search_image(image_bytes, k)
            assert query_text is not None
            return self._images.search_text(query_text, k)
        if image_bytes is not None:
            raise ConfigError("searching by image needs the CLIP image index: set "
                              "KINJECT_MODELS__CLIP_CHECKPOINT (see `kinject doctor`)")
        assert query_text is not None
        return _images_from_text_hits(self.search(query_text, k * 4), k)

    def ask(self, question: str, k: int | None = None,
            filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
            model: str | None = None, sampling: Sampling | None = None) -> Answer:
        """Answer from the index with citations (``route``: rag, adapter, both, auto);
        ``model``: None (the active adapter), ``"base"`` (no adapter) or an adapter version.
        ``sampling``: sampled decoding where the generator writes (greedy by default).
        ``Answer.images``: the cited passages' images, then those CLIP finds (CLIP on)."""
        from kinject.index.filters import SearchFilters

        flt = SearchFilters.coerce(filters)
        answer = self._rag_for(model).ask(question, k, flt, route, sampling=sampling)
        return self._with_clip_images(question, answer, flt)

    def ask_stream(self, question: str, k: int | None = None,
                   filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
                   model: str | None = None, sampling: Sampling | None = None
                   ) -> Iterator[str | Answer]:
        """The answer's text in pieces as it is generated, then the final Answer."""
        from kinject.index.filters import SearchFilters

        flt = SearchFilters.coerce(filters)
        rag = self._rag_for(model)  # an unknown model raises here, before the stream starts
        pieces = rag.ask_stream(question, k, flt, route, sampling=sampling)
        return self._stream_with_images(question, pieces, flt)

    def _stream_with_images(self, question: str, pieces: Iterator[str | Answer],
                            filters: SearchFilters | None) -> Iterator[str | Answer]:
        for item in pieces:
            yield (self._with_clip_images(question, item, filters) if isinstance(item, Answer)
                   else item)

    def _with_clip_images(self, question: str, answer: Answer,
                          filters: SearchFilters | None) -> Answer:
        """The answer with the images CLIP finds for the question added after the cited ones
        (``rag.max_images`` at most, each scoring ``rag.image_min_score`` or more, passing the
        question's filters). Abstentions and closed-book answers are left as they are."""
        images, cfg = self._images, self.settings.rag
        if images is None or cfg.max_images == 0 or answer.abstained or (
                answer.route == "adapter"):
            return answer
        t0 = time.perf_counter()
        # Ask for more than needed: cited images and filtered-out ones take places.
        k = (cfg.max_images + len(answer.images)) * (1 if filters is None or filters.empty
                                                     else 4)
        try:
            hits = images.search_text(question, k)
        except KinjectError as exc:  # the answer stands on its passages without the images
            log.warning("no CLIP images for the answer: %s", exc)
            return answer
        found = [h.image_id for h in hits if h.score >= cfg.image_min_score
                 and (filters is None or filters.matches(_ImageView.of(h)))]
        extra = [i for i in dict.fromkeys(found) if i not in answer.images][:cfg.max_images]
        spent = time.perf_counter() - t0
        timings = {**answer.timings, "images_s": spent}
        if "total_s" in timings:
            timings["total_s"] = answer.timings["total_s"] + spent
        return dataclasses.replace(answer, images=(*answer.images, *extra), timings=timings)

    def tokenizer(self) -> Any:
        """The generator's tokenizer (loads the generator on first use): what token counts
        of questions and answers are counted in."""
        return self._rag_service().generator.tokenizer

    def embed(self, texts: Sequence[str]) -> tuple[Any, int]:
        """The index's text embedder's unit-length vectors for ``texts`` and the tokens they
        took: by the embedder's own tokenizer where it has one (sentence-transformers), else
        by the generator's."""
        embedder = self.index.embedder
        vectors = embedder.encode(list(texts))
        model = getattr(embedder, "_model", None)
        tok = getattr(model, "tokenizer", None)
        if tok is None or not callable(getattr(tok, "encode", None)):
            tok = self.tokenizer()
        used = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        return vectors, used

    def _rag_for(self, model: str | None) -> Any:
        """The RAG service of the active adapter (None), the base model ("base") or a named
        adapter version (raises NotFound for an unknown one); each keeps its own batcher
        and answer cache."""
        rag = self._rag_service()
        if model is None:
            return rag
        from kinject.rag.routes import AdapterState
        from kinject.rag.service import RagService

        version = None if model == "base" else self._registry().resolve(model)
        by_model: dict[str | None, Any] = self.__dict__.setdefault("_rags_by_model", {})
        if version in by_model:  # loaded before: no lock, never behind another model's load
            return by_model[version]
        with self._lock:
            if version not in by_model:
                switcher = getattr(self, "switcher", None)
                generator = (switcher.generator(version) if switcher is not None
                             else rag.generator)
                lineage = (frozenset(self._registry().get(version).lineage) if version
                           else frozenset())
                state = AdapterState(version, lineage)
                by_model[version] = RagService(self.index, generator, rag.config,
                                               adapter=lambda: state, reader=self._reader)
            return by_model[version]

    def _rag_service(self) -> Any:
        rag = self._rag
        if rag is not None:  # published whole once loaded: no lock on the request path
            return rag
        with self._lock:
            if self._rag is None:
                from kinject.models import load_generator
                from kinject.rag.service import RagConfig, RagService

                m = self.settings.models
                generator = load_generator(m.generator, self.settings.models_dir, m.device,
                                           m.dtype, m.quantize)
                generator = self._with_adapters(generator)
                self._rag = RagService(self.index, generator,
                                       RagConfig.from_settings(self.settings),
                                       adapter=self._adapter_state, reader=self._reader)
            return self._rag

    def _reader(self) -> Any:
        """read mode's reader model (loaded, and converted once, on first use), one for every
        RagService of this process."""
        from kinject.rag.reader import Ct2Reader
        from kinject.rag.reader_model import load_reader

        with self._reader_lock:
            if self._reader_obj is None:
                m = self.settings.models
                self._reader_obj = Ct2Reader(load_reader(m.reader, self.settings.models_dir,
                                                         m.device))
            return self._reader_obj

    # -- adapters and fine-tuning jobs (finetune/) ---------------------------------------------
    def _adapter_state(self) -> Any:
        """The adapter serving now and the sources it was trained on (RAG's ``auto`` route)."""
        from kinject.rag.routes import AdapterState

        switcher = getattr(self, "switcher", None)
        if switcher is not None and switcher.follow_pointer:
            # Follow ACTIVE now (one stat), not only when the model next generates: the answer
            # cache is keyed by this version, so a stale one would serve the old adapter's
            # cached answers right after an activation or a rollback.
            try:
                switcher.refresh()
            except KinjectError as exc:  # what serves now keeps serving
                log.error("cannot switch adapters: %s", exc)
        version = switcher.current_version if switcher is not None else None
        if version is None:
            return AdapterState()
        known: dict[str, frozenset[str]] = self.__dict__.setdefault("_lineages", {})
        if version not in known:  # a version is immutable: read its manifest once
            try:
                known[version] = frozenset(self._registry().get(version).lineage)
            except (KinjectError, OSError) as exc:
                log.warning("lineage of adapter %s unavailable: %s", version[:12], exc)
                return AdapterState(version, frozenset())
        return AdapterState(version, known[version])

    def _with_adapters(self, loaded: Any) -> Any:
        """The generator with the ACTIVE adapter, checked before every answer (hot-swap)."""
        from kinject.finetune.fetch import AdapterFetcher
        from kinject.finetune.registry import AdapterRegistry
        from kinject.finetune.serving import AdapterSwitcher

        registry = AdapterRegistry.for_data_dir(self.settings.data_dir)
        ft = self.settings.finetune
        fetcher = AdapterFetcher(registry, api_key=ft.fetch_api_key,
                                 max_bytes=ft.fetch_max_bytes, timeout_s=ft.fetch_timeout_s)
        self.switcher = AdapterSwitcher(loaded, registry, follow_pointer=True, fetcher=fetcher,
                                        retry_s=ft.fetch_retry_s)
        self.switcher.refresh()
        return self.switcher.generator()

    def follow_adapters(self, stop: threading.Event) -> threading.Thread:
        """Follow adapter changes in a thread until ``stop``: the ACTIVE pointer and the
        events on kinject.adapters of the attached broker. A promotion is loaded (and its
        bytes checked against the announced sha256) before a request needs it; a copy that
        fails the check is refused and the version served before goes on serving."""
        self._rag_service()
        return self.switcher.watch(stop, kafka=self.settings.kafka, bootstrap=self._bootstrap)

    def generator_for(self, version: str | None = "active") -> Any:
        """A generator bound to one adapter version, for a request that names it (a
        /v1/chat/completions model name): ``"active"`` follows promotions, None is the base
        model. Raises NotFound for an unknown version, AdapterLoadError for a tainted one."""
        self._rag_service()
        return self.switcher.generator(version)

    def _registry(self) -> Any:
        from kinject.finetune.registry import AdapterRegistry

        return AdapterRegistry.for_data_dir(self.settings.data_dir)

    def adapters(self) -> list[dict[str, Any]]:
        """Every adapter version, oldest first, with ``active`` set on the serving one."""
        from dataclasses import asdict

        registry = self._registry()
        active = registry.active()
        return [{**asdict(v), "active": v.version == active} for v in registry.versions()]

    def adapter(self, version: str) -> dict[str, Any]:
        from dataclasses import asdict

        registry = self._registry()
        v = registry.get(version)
        return {**asdict(v), "active": v.version == registry.active(),
                "ancestors": [a.version for a in registry.ancestors(v.version)[1:]]}

    def adapter_archive(self, version: str) -> Any:
        """A version's files as one tar stream (finetune/archive.AdapterArchive: ``version``,
        ``size``, ``chunks()``), for a replica that fetches it. Raises NotFound for a version
        the registry does not hold."""
        from kinject.finetune.archive import AdapterArchive

        registry = self._registry()
        version = registry.resolve(version)
        return AdapterArchive.open(registry.path(version), version)

    def activate(self, version: str | None) -> dict[str, Any]:
        """Serve ``version`` (None: the base model) on every replica; refuses tainted ones."""
        return self._announce(self._registry().activate(version, "activated"))

    def rollback(self) -> dict[str, Any]:
        """Go back to the adapter that served before the current one."""
        return self._announce(self._registry().rollback())

    def _announce(self, change: Any) -> dict[str, Any]:
        bootstrap = getattr(self, "_bootstrap", None) or self.settings.kafka.bootstrap_servers
        if bootstrap:
            from kinject.errors import KinjectError
            from kinject.finetune.serving import publish_activation

            try:
                publish_activation(self.settings.kafka, bootstrap, change,
                                   registry=self._registry(),
                                   publish_url=self.settings.finetune.publish_url)
            except (KinjectError, OSError) as exc:  # replicas also follow the pointer file
                log.warning("adapter change not announced on Kafka: %s", exc)
        result: dict[str, Any] = change.to_dict()
        return result

    def start_finetune_job(self) -> dict[str, Any]:
        """Start one fine-tuning cycle in the background; returns the job record (queued).
        Raises JobBusy when a cycle is running. A promotion is announced on the attached
        broker (the embedded one included)."""
        kwargs: dict[str, Any] = {"bootstrap": self._bootstrap} if self._bootstrap else {}
        return self._jobs.start(self.settings, **kwargs).to_dict()

    def stop_finetune_jobs(self, timeout_s: float) -> list[str]:
        """Cancel the cycles this service started (they end at their next training step or
        gate batch, recorded as failed, cancelled, nothing promoted) and wait up to
        ``timeout_s`` for them; returns the ids of those still running. No new one starts."""
        return self._jobs.stop(timeout_s)

    def finetune_job(self, job_id: str) -> dict[str, Any]:
        """A job's status, progress (0-1), stage, metrics and gate report."""
        from kinject.finetune.jobs import JobStore

        store = JobStore.for_data_dir(self.settings.data_dir)
        try:
            return store.get(job_id).to_dict()
        finally:
            store.close()

    def finetune_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        from kinject.finetune.jobs import JobStore

        store = JobStore.for_data_dir(self.settings.data_dir)
        try:
            return [j.to_dict() for j in store.recent(limit)]
        finally:
            store.close()

    # -- serving: publishing, lineage, dead letters, readiness (kinject serve, the API) -------
    def attach(self, bootstrap: str, supervisor: BrokerSupervisor | None = None) -> None:
        """Use the broker at ``bootstrap`` for publish, dlq and status (closed by close()).

        ``supervisor``: the embedded broker's, whose state /readyz reports; after each
        restart the outbox keeper re-sends at once what the new (empty) broker lacks."""
        from kinject.stream.lag import BrokerStatus
        from kinject.stream.outbox import Outbox
        from kinject.stream.producer import Producer
        from kinject.stream.publish import OUTBOX_FILE

        self.detach()
        self._bootstrap = bootstrap
        self._outbox = Outbox(self.settings.data_dir / OUTBOX_FILE)
        self._producer = Producer(self.settings.kafka, bootstrap, self._outbox)
        self._status = BrokerStatus(self.settings.kafka, bootstrap)
        self._supervisor = supervisor
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
        for part in (self._outbox, self._status, self._dlq):
            if part is not None:
                try:
                    part.close()
                except KinjectError as exc:
                    log.warning("closing %r: %s", part, exc)
        self._producer = self._outbox = self._status = self._bootstrap = None
        self._keeper = self._supervisor = self._dlq = None

    def _require_broker(self) -> str:
        if self._bootstrap is None:
            raise BrokerError("no broker attached: run `kinject serve`, or call attach()")
        return self._bootstrap

    def publish(self, records: Sequence[Record]) -> list[str]:
        """Accept records durably (the outbox), all or none; return their ids.

        Every record is validated (encoded, size-checked) before any is written, and all
        are written in one transaction: a batch with one bad record leaves nothing behind.
        With an outbox keeper running (``kinject serve``) this never waits on the broker:
        the keeper sends them at once, or re-sends them once a lost broker is back. Raises
        BadRecord (nothing accepted) or Busy when the outbox is full.
        """
        from kinject.stream.producer import encode_message

        self._require_broker()
        limit = self._producer.max_record_bytes
        messages = [encode_message(r, limit) for r in records]
        rows = self._outbox.accept_many(self._producer.topic, messages,
                                        max_pending=self.settings.api.max_outbox_records)
        if self._keeper is not None:
            self._keeper.wake()
        else:  # no keeper (a library user): send now and wait for the acknowledgement
            with self._publish_lock:
                try:
                    self._outbox.deliver(self._producer)
                except BrokerError as exc:
                    log.warning("records accepted but not yet acknowledged: %s", exc)
        return [f"outbox:{row}" for row in rows]

    def outbox_keeper(self, interval_s: float = 5.0) -> OutboxKeeper:
        """A keeper that prunes what the ingest group committed and re-sends what a broker
        lost, sharing this service's producer lock (start it with ``.start(stop)``)."""
        from kinject.stream.outbox_keeper import OutboxKeeper

        bootstrap = self._require_broker()
        self._keeper = OutboxKeeper(self._outbox, self._producer, self.settings.kafka,
                                    bootstrap, interval_s, lock=self._publish_lock)
        return self._keeper

    def outbox_keeper_state(self) -> dict[str, Any] | None:
        """Whether the outbox keeper runs and what it did (None: no keeper)."""
        return None if self._keeper is None else self._keeper.state()

    def lineage(self, source_id: str) -> dict[str, Any]:
        """Where a source came from and what it became: Kafka positions, chunks, adapters."""
        events = self._docstore().lineage(source_id)
        if not events:
            raise NotFound(f"no source {source_id!r} has reached this index")
        from kinject.index.visibility import hidden_chunks

        return {"source_id": source_id, "events": events,
                "chunks_now": events[-1]["chunk_ids"] if events[-1]["op"] == "upsert" else [],
                # chunks kept but not searched: duplicates of another source's chunk, rows
                # superseded by a newer conflicting one (see `kinject conflicts`)
                "hidden": hidden_chunks(self._docstore(), source_id)}

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

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest updates this index applied (source id, op, Kafka position, time)."""
        return self._docstore().recent_lineage(limit)

    def conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Contradictions between structured sources (of ``entity`` when given): every
        value with its source, chunk and record time, newest first (the one searched)."""
        from kinject.index.conflicts import store_conflicts

        return [c.to_dict() for c in store_conflicts(self._docstore(), entity)]

    def adapter_version(self) -> str | None:
        """The active adapter version, or None when the base model serves."""
        try:
            from kinject.finetune.registry import AdapterRegistry
        except ImportError:
            return None
        root = self.settings.data_dir / "adapters"
        return AdapterRegistry(root).active() if root.is_dir() else None

    def adapter_versions(self) -> list[str]:
        try:
            from kinject.finetune.registry import AdapterRegistry
        except ImportError:
            return []
        root = self.settings.data_dir / "adapters"
        registry: Any = AdapterRegistry(root)
        if not root.is_dir():
            return []
        return [v.version for v in registry.list() if v.status != "tainted"]

    def warm_up(self) -> None:
        """Load the generator (and in read mode the reader) now, not on the first question."""
        self._rag_service()
        if self.settings.rag.mode == "read":
            self._reader()

    @property
    def models_loaded(self) -> bool:
        return self._index is not None and self._rag is not None

    def chunks_lag(self) -> dict[int, int]:
        """{partition of kinject.chunks: updates this replica has not applied yet}."""
        status = self._broker_status()
        topic = status.topics.chunks
        ends = status.end_offsets(topic)
        applied = self.index.applied_offsets(topic)
        return {p: max(e - applied.get(p, 0), 0) for p, e in ends.items()}

    def ready(self) -> dict[str, Any]:
        """Readiness: the models are loaded, the index has caught up with kinject.chunks (once
        caught up, a replica stays ready while it keeps applying) and, where this process runs
        the embedded broker, that broker is up (its supervisor restarts it).

        An external broker's trouble (down, slow to answer) is reported in the checks but does
        not make a replica not ready: search and ask run from the local index, and a Kafka
        blip would otherwise take every replica out of its load balancer at once."""
        checks: dict[str, Any] = {"models_loaded": self.models_loaded}
        embedded_up = self._broker_alive()
        if self._supervisor is not None:
            checks["embedded_broker"] = self._supervisor.state()
        if (keeper := self.outbox_keeper_state()) is not None:  # reported, not a gate
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

    def _broker_alive(self) -> bool:
        """False when the embedded broker is known to be dead (no need to ask it)."""
        return self._supervisor is None or self._supervisor.running

    def _corpus_store(self) -> Any:
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
            corpus = self._corpus_store()
            if corpus is None:
                return None
            summary: dict[str, int] = corpus.summary()
        except sqlite3.Error as exc:  # a status page must not fail on it
            log.warning("corpus figures unavailable: %s", exc)
            return None
        return summary

    def stats(self) -> dict[str, Any]:
        """Figures for /metrics and the web page; a part the broker cannot answer is None.
        ``corpus_lag``: chunk events the group of this data dir's corpus store (the `kinject
        serve`, `worker` and `finetune schedule` processes that fill it) has not committed,
        per partition."""
        import sqlite3

        out: dict[str, Any] = {"index_chunks": len(self.index),
                               "adapter_version": self.adapter_version(),
                               "ingest_lag": None, "chunks_lag": None, "dlq_count": None,
                               "corpus": self.corpus_status(), "corpus_lag": None}
        if self._status is None:
            return out
        out["dlq_count"] = self.dead_letter_count()
        if not self._broker_alive():
            return out
        try:
            out["ingest_lag"] = self._status.ingest_lag()
            out["chunks_lag"] = self.chunks_lag()
            corpus = self._corpus_store()
            out["corpus_lag"] = self._status.corpus_lag(
                corpus.store_id if corpus is not None else None)
        except KinjectError as exc:
            log.warning("broker figures unavailable: %s", exc)
        except sqlite3.Error as exc:  # a status page must not fail on it
            log.warning("corpus figures unavailable: %s", exc)
        return out

    def _broker_status(self) -> Any:
        self._require_broker()
        return self._status

    def _docstore(self) -> Docstore:
        store = self.index.docstore
        if store is None:
            raise IndexFailure("the index is not open")
        return store


def _images_from_text_hits(hits: list[Hit], k: int) -> list[ImageHit]:
    """Images behind the caption/OCR chunks among text hits, one per image, best first."""
    from kinject.index.image_index import ImageHit

    found: dict[str, dict[str, Any]] = {}
    for hit in hits:
        image_id = hit.meta.get("image_id")
        if hit.meta.get("kind") != "image" or not image_id:
            continue
        entry = found.setdefault(str(image_id), {"source_id": hit.source_id, "score": hit.score,
                                                 "caption": "", "ocr_text": "",
                                                 "meta": dict(hit.meta)})
        unit = "caption" if hit.meta.get("unit") == "caption" else "ocr_text"
        entry[unit] = (entry[unit] + " " + hit.text).strip()
    ranked = sorted(found.items(), key=lambda kv: -float(kv[1]["score"]))[:k]
    return [ImageHit(image_id=iid, source_id=e["source_id"], caption=e["caption"],
                     ocr_text=e["ocr_text"], score=float(e["score"]), meta=e["meta"])
            for iid, e in ranked]


@dataclasses.dataclass(frozen=True)
class _ImageView:
    """A CLIP image hit as search filters see a chunk: of kind ``image``, with its meta."""

    source_id: str
    meta: dict[str, Any]

    @classmethod
    def of(cls, hit: ImageHit) -> _ImageView:
        return cls(hit.source_id, {"kind": "image", **hit.meta})
