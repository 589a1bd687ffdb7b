"""The one facade between the edges (CLI, API) and the core: a local replica of the index
that catches up from ``kinject.chunks``, searches it and answers questions over it."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import BrokerError
from kinject.types import Answer, Hit

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kinject.index.filters import SearchFilters
    from kinject.index.text_index import TextIndex

log = logging.getLogger(__name__)


class KinjectService:
    """Open with ``with KinjectService(settings) as svc:``; models load on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._index: TextIndex | None = None
        self._rag: Any = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> KinjectService:
        from kinject.index.text_index import text_index_from_settings

        self._index = text_index_from_settings(self.settings).open()
        return self

    def close(self) -> None:
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
        mat = IndexMaterialiser(self.settings.kafka, bootstrap, self.index)
        mat.start()
        applied, quiet_since = 0, time.monotonic()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() - quiet_since < idle_s and time.monotonic() < deadline:
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

    def ask(self, question: str, k: int | None = None) -> Answer:
        return self._rag_service().ask(question, k)

    def _rag_service(self) -> Any:
        with self._lock:
            if self._rag is None:
                from kinject.models import load_generator
                from kinject.rag.service import RagService

                m = self.settings.models
                generator = load_generator(m.generator, self.settings.models_dir, m.device,
                                           m.dtype)
                self._rag = RagService(self.index, generator)
            return self._rag
