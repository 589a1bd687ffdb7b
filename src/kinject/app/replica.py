"""The local replica of the index: opened from the data dir, caught up from
``kinject.chunks``, searched for text and images."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import BrokerError, IndexFailure
from kinject.types import Hit

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kinject.index.docstore import Docstore
    from kinject.index.filters import SearchFilters
    from kinject.index.image_index import ImageHit, ImageIndex
    from kinject.index.text_index import TextIndex

log = logging.getLogger(__name__)


class Replica:
    """The text index (and the CLIP image index, when configured) of this data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._index: TextIndex | None = None
        # The CLIP image index, None while KINJECT_MODELS__CLIP_CHECKPOINT is unset.
        self._images: ImageIndex | None = None
        self._warm = False

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        from kinject.index.text_index import text_index_from_settings

        self._index = text_index_from_settings(self.settings).open()
        self._images = self._open_images()

    def _open_images(self) -> ImageIndex | None:
        from kinject.index.clip_embedder import make_clip_embedder
        from kinject.index.image_index import ImageIndex

        m = self.settings.models
        clip = make_clip_embedder(m.clip_model, m.clip_checkpoint, device=m.device)
        if clip is None:
            return None
        return ImageIndex(self.index.directory, clip).open()

    def warm_up(self) -> None:
        """Load what the first search would load (see TextIndex.warm_up), CLIP's text side
        too, so that the first query is as quick as the next ones."""
        self.index.warm_up()
        if self._images is not None:
            self._images.embedder.encode_texts(["warm-up"])
        self._warm = True

    @property
    def warm(self) -> bool:
        """Whether warm_up() has run: a search loads nothing more."""
        return self._warm and self.is_open

    def close(self) -> None:
        self._warm = False
        if self._images is not None:
            self._images.close()
            self._images = None
        if self._index is not None:
            self._index.close()
            self._index = None

    @property
    def is_open(self) -> bool:
        return self._index is not None

    @property
    def index(self) -> TextIndex:
        if self._index is None:
            raise RuntimeError("KinjectService is not open; use it as a context manager")
        return self._index

    @property
    def images(self) -> ImageIndex | None:
        """The CLIP image index, or None when it is off (no checkpoint configured)."""
        return self._images

    def docstore(self) -> Docstore:
        store = self.index.docstore
        if store is None:
            raise IndexFailure("the index is not open")
        return store

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
