"""Answering: the RAG services (one per model: the active adapter, the base model or a named
version) over the replica, the read-mode reader, CLIP images added to answers."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kinject.app.adapters import Adapters
from kinject.app.replica import Replica
from kinject.config import Settings
from kinject.errors import KinjectError
from kinject.types import Answer

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import numpy as np

    from kinject.index.filters import SearchFilters
    from kinject.index.image_index import ImageHit
    from kinject.protocols import Tokenizer
    from kinject.rag.generate import Sampling
    from kinject.rag.reader import Ct2Reader
    from kinject.rag.service import RagService

log = logging.getLogger(__name__)


class Answering:
    """Questions answered over ``replica`` by the generator that ``adapters`` serves."""

    def __init__(self, settings: Settings, replica: Replica, adapters: Adapters) -> None:
        self.settings = settings
        self._replica = replica
        self._adapters = adapters
        self._rag: RagService | None = None
        # The RAG services of models named in a request (None: the base model), loaded once.
        self._rags_by_model: dict[str | None, RagService] = {}
        # Held while a model loads (the generator at warm-up, an adapter on first use): tens
        # of seconds. Nothing a status page, /metrics or /readyz needs takes it; a model
        # already loaded is read without it (published only once built).
        self._lock = threading.Lock()
        self._reader_obj: Ct2Reader | None = None
        self._reader_lock = threading.Lock()  # not self._lock: a first load takes minutes

    @property
    def loaded(self) -> bool:
        """Whether the generator has loaded."""
        return self._rag is not None

    def ask(self, question: str, k: int | None = None,
            filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
            model: str | None = None, sampling: Sampling | None = None,
            context: Sequence[str] = ()) -> Answer:
        """Answer from the index with citations (``route``: rag, adapter, both, auto);
        ``model``: None (the active adapter), ``"base"`` (no adapter) or an adapter version.
        ``sampling``: sampled decoding where the generator writes (greedy by default).
        ``context``: a conversation's earlier user turns (RagService.ask).
        ``Answer.images``: the cited passages' images, then those CLIP finds (CLIP on)."""
        from kinject.index.filters import SearchFilters

        flt = SearchFilters.coerce(filters)
        answer = self._rag_for(model).ask(question, k, flt, route, sampling=sampling,
                                          context=context)
        return self._with_clip_images(question, answer, flt)

    def ask_stream(self, question: str, k: int | None = None,
                   filters: SearchFilters | Iterable[str] | None = None, route: str = "auto",
                   model: str | None = None, sampling: Sampling | None = None,
                   context: Sequence[str] = ()) -> Iterator[str | Answer]:
        """The answer's text in pieces as it is generated, then the final Answer."""
        from kinject.index.filters import SearchFilters

        flt = SearchFilters.coerce(filters)
        rag = self._rag_for(model)  # an unknown model raises here, before the stream starts
        pieces = rag.ask_stream(question, k, flt, route, sampling=sampling, context=context)
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
        images, cfg = self._replica.images, self.settings.rag
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

    def tokenizer(self) -> Tokenizer:
        """The generator's tokenizer (loads the generator on first use): what token counts
        of questions and answers are counted in."""
        return self.rag_service().generator.tokenizer

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """The index's text embedder's unit-length vectors for ``texts`` and the tokens they
        took: by the embedder's own tokenizer where it has one (sentence-transformers), else
        by the generator's."""
        embedder = self._replica.index.embedder
        vectors = embedder.encode(list(texts))
        model = getattr(embedder, "_model", None)
        tok = getattr(model, "tokenizer", None)
        if tok is None or not callable(getattr(tok, "encode", None)):
            tok = self.tokenizer()
        used = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        return vectors, used

    def _rag_for(self, model: str | None) -> RagService:
        """The RAG service of the active adapter (None), the base model ("base") or a named
        adapter version (raises NotFound for an unknown one); each keeps its own batcher
        and answer cache."""
        rag = self.rag_service()
        if model is None:
            return rag
        from kinject.rag.routes import AdapterState
        from kinject.rag.service import RagService

        registry = self._adapters.registry()
        version = None if model == "base" else registry.resolve(model)
        by_model = self._rags_by_model
        if version in by_model:  # loaded before: no lock, never behind another model's load
            return by_model[version]
        with self._lock:
            if version not in by_model:
                switcher = self._adapters.switcher
                generator = (switcher.generator(version) if switcher is not None
                             else rag.generator)
                lineage = (frozenset(registry.get(version).lineage) if version
                           else frozenset())
                state = AdapterState(version, lineage)
                by_model[version] = RagService(self._replica.index, generator, rag.config,
                                               adapter=lambda: state, reader=self._reader)
            return by_model[version]

    def rag_service(self) -> RagService:
        """The RAG service of the active adapter (the generator loads on first use)."""
        rag = self._rag
        if rag is not None:  # published whole once loaded: no lock on the request path
            return rag
        with self._lock:
            if self._rag is None:
                from kinject.models import load_generator
                from kinject.rag.service import RagConfig, RagService

                m = self.settings.models
                loaded = load_generator(m.generator, self.settings.models_dir, m.device,
                                        m.dtype, m.quantize)
                generator = self._adapters.with_adapters(loaded)
                self._rag = RagService(self._replica.index, generator,
                                       RagConfig.from_settings(self.settings),
                                       adapter=self._adapters.adapter_state,
                                       reader=self._reader)
            return self._rag

    def _reader(self) -> Ct2Reader:
        """read mode's reader model (loaded, and converted once, on first use), one for every
        RagService of this process."""
        from kinject.rag.reader import Ct2Reader
        from kinject.rag.reader_model import load_reader

        with self._reader_lock:
            if self._reader_obj is None:
                m = self.settings.models
                self._reader_obj = Ct2Reader(load_reader(m.reader, self.settings.models_dir,
                                                         m.device, m.threads or 0))
            return self._reader_obj

    def warm_up(self) -> None:
        """Load the generator (and in read mode the reader) now, not on the first question."""
        self.rag_service()
        if self.settings.rag.mode == "read":
            self._reader()


@dataclasses.dataclass(frozen=True)
class _ImageView:
    """A CLIP image hit as search filters see a chunk: of kind ``image``, with its meta."""

    source_id: str
    meta: dict[str, Any]

    @classmethod
    def of(cls, hit: ImageHit) -> _ImageView:
        return cls(hit.source_id, {"kind": "image", **hit.meta})
