"""The CLIP image index: image rows in the docstore (durable truth) + their own FAISS index.

Rows live in the ``images`` table of the same SQLite docstore as the text chunks, keyed by
image id (hash of source id and image bytes), with the caption, the OCR text, the metadata,
a small JPEG thumbnail and the CLIP vector. FAISS (``IndexIDMap2``, inner product on unit
vectors) mirrors them by row id and is saved atomically (temp file + rename) beside a note of
the image generation it reflects; ``open`` loads that snapshot when it is current and
otherwise rebuilds it from the stored vectors.

On the stream, a source's images travel as an :class:`ImageUpdate` right after the source's
text update (same key, same partition). A text update of a source (upsert or delete) clears
the source's images and a following ImageUpdate sets them again, so a source that becomes
text-only, or is deleted, loses its images with no extra event.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.errors import IndexFailure
from kinject.index.changes import SourceUpdate
from kinject.index.docstore import Docstore
from kinject.index.faiss_index import FaissIndex

if TYPE_CHECKING:
    from PIL.Image import Image

    from kinject.index.clip_embedder import ClipEmbedder
    from kinject.types import ImageItem

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 128
_GENERATION_KEY = "image_generation"


@dataclass(frozen=True)
class ImageRow:
    """What the index keeps of an image: not its bytes, but its text and a thumbnail."""

    image_id: str
    source_id: str
    caption: str = ""
    ocr_text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class ImageUpdate:
    """Replace every image the index holds for ``source_id`` with ``images`` (op=upsert), or
    remove them all (op=delete). ``vectors`` holds one CLIP row per image."""

    source_id: str
    images: tuple[ImageRow, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    op: str = "upsert"
    model: str = ""
    record_position: tuple[str, int, int] | None = None

    def __post_init__(self) -> None:
        if self.op not in ("upsert", "delete"):
            raise ValueError(f"op must be 'upsert' or 'delete', got {self.op!r}")
        if len(self.images) != len(self.vectors):
            raise ValueError(f"{len(self.images)} images but {len(self.vectors)} vectors "
                             f"for {self.source_id}")
        if any(i.source_id != self.source_id for i in self.images):
            raise ValueError(f"an image of the update for {self.source_id} names another source")


def _unembedded(update: ImageUpdate) -> bool:
    """Published with its images but without their vectors (by a worker without CLIP)."""
    return update.op == "upsert" and bool(update.images) and update.vectors.shape[1] == 0


@dataclass(frozen=True)
class ImageHit:
    """A retrieved image (higher score is better) with its caption and OCR text."""

    image_id: str
    source_id: str
    caption: str
    ocr_text: str
    score: float
    meta: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None


def make_thumbnail(data: bytes, max_side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A JPEG of at most ``max_side`` pixels a side (a few KB), or None if undecodable."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    try:
        opened = PILImage.open(io.BytesIO(data))
        opened.load()
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return None
    img = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
    img.thumbnail((max_side, max_side))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80)
    return out.getvalue()


def image_rows(items: Sequence[ImageItem]) -> list[ImageRow]:
    """Index rows for ingested images: their text, metadata and a thumbnail."""
    return [ImageRow(i.image_id, i.source_id, i.caption, i.ocr_text, dict(i.meta),
                     make_thumbnail(i.data)) for i in items]


class ImageIndex:
    """Search images by text or by image. Thread-safe: searches run while updates apply."""

    def __init__(self, directory: Path, embedder: ClipEmbedder) -> None:
        self.directory = directory
        self.embedder = embedder
        self.docstore: Docstore | None = None
        self.faiss: FaissIndex | None = None
        self._write_lock = threading.Lock()
        self._warned_models: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> ImageIndex:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder.warm_up()
        self.docstore = Docstore(self.directory / "docstore.sqlite")
        self.faiss = self._load_or_rebuild()
        return self

    def close(self) -> None:
        if self.docstore is not None:
            self.snapshot()
            self.docstore.close()
            self.docstore = None

    def __enter__(self) -> ImageIndex:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _snapshot_path(self) -> Path:
        return self.directory / "images.faiss"

    @property
    def _snapshot_meta(self) -> Path:
        return self.directory / "images.faiss.json"

    def _generation(self) -> int:
        return int(self._store().state(_GENERATION_KEY) or 0)

    def _load_or_rebuild(self) -> FaissIndex:
        store = self._store()
        gen = self._generation()
        try:
            meta = json.loads(self._snapshot_meta.read_text())
            if meta.get("generation") == gen and meta.get("model") == self.embedder.name:
                index = FaissIndex.load(self._snapshot_path)
                log.info("loaded image index snapshot: %d images (generation %d)",
                         len(index), gen)
                return index
        except (OSError, ValueError, RuntimeError):
            pass
        ids, vecs = store.image_vectors()
        if len(ids) and vecs.shape[1] != self.embedder.dim:
            raise IndexFailure(
                f"the image index in {self.directory} holds {vecs.shape[1]}-d vectors but "
                f"{self.embedder.name!r} makes {self.embedder.dim}-d ones; use the CLIP model "
                "it was built with or a new data directory"
            )
        index = FaissIndex(self.embedder.dim)
        index.upsert(ids, vecs)
        log.info("rebuilt the image index from the docstore: %d images", len(ids))
        return index

    def snapshot(self) -> None:
        """Save FAISS atomically with the image generation it reflects."""
        store, index = self._store(), self._faiss()
        with self._write_lock:
            gen = int(store.state(_GENERATION_KEY) or 0)
            index.save(self._snapshot_path)
            tmp = self._snapshot_meta.with_name(f".{self._snapshot_meta.name}.tmp")
            tmp.write_text(json.dumps({"generation": gen, "model": self.embedder.name}))
            os.replace(tmp, self._snapshot_meta)

    def _store(self) -> Docstore:
        if self.docstore is None:
            raise IndexFailure("the image index is not open; call open() first")
        return self.docstore

    def _faiss(self) -> FaissIndex:
        if self.faiss is None:
            raise IndexFailure("the image index is not open; call open() first")
        return self.faiss

    # -- writes -------------------------------------------------------------------------------
    def embed(self, items: Sequence[ImageItem]) -> ImageUpdate | None:
        """One source's ingested images as an update (None when there are none)."""
        if not items:
            return None
        sources = {i.source_id for i in items}
        if len(sources) != 1:
            raise ValueError(f"embed() takes the images of one source, got {sorted(sources)}")
        vectors = self.embedder.encode_images([i.data for i in items])
        return ImageUpdate(items[0].source_id, tuple(image_rows(items)), vectors,
                           model=self.embedder.name)

    def upsert(self, update: ImageUpdate) -> None:
        """Replace the source's images with the update's (or remove them, op=delete)."""
        self.apply([update])

    def delete_source(self, source_id: str) -> int:
        """Remove every image of a source; return how many were removed."""
        return self._write({source_id: None})

    def delete(self, image_ids: Sequence[str]) -> int:
        """Remove images by id; return how many were removed."""
        store, index = self._store(), self._faiss()
        with self._write_lock:
            with store.transaction() as db:
                gone = store.remove_images(db, image_ids=image_ids)
                if gone:
                    _bump(store, db)
            index.remove(gone)
        return len(gone)

    def apply(self, changes: Sequence[SourceUpdate | ImageUpdate]) -> int:
        """Apply a stretch of kinject.chunks in log order; return the sources touched.

        A text update (upsert or delete) clears its source's images; an ImageUpdate sets
        them. Only each source's last state is written, in one transaction, so applying the
        same stretch twice changes nothing.
        """
        final: dict[str, ImageUpdate | None] = {}
        cleared: set[str] = set()
        for change in changes:
            if isinstance(change, ImageUpdate):
                if not _unembedded(change) and not self._compatible(change):
                    continue
                final[change.source_id] = change if change.op == "upsert" else None
            else:
                final[change.source_id] = None
                cleared.add(change.source_id)
        for source, update in final.items():  # only each source's last state is embedded
            if update is not None and _unembedded(update):
                final[source] = self._embed_thumbnails(update)
        store = self._store()
        # Text-only traffic (the common case) must not cost a write transaction.
        for source in [s for s, u in final.items() if u is None and s in cleared]:
            if store.image_count(source) == 0:
                del final[source]
        if final:
            self._write(final)
        return len(final)

    def _embed_thumbnails(self, update: ImageUpdate) -> ImageUpdate:
        """An update published without vectors (its worker had no CLIP) embedded here from
        its thumbnails (THUMBNAIL_SIDE pixels a side; the originals stay at their source):
        an image without a thumbnail (undecodable there) is left out, and the whole update
        when CLIP fails on it, with an error naming the source (its caption and OCR chunks
        still find it) rather than a stream stopped on it."""
        rows = [i for i in update.images if i.thumbnail]
        if len(rows) < len(update.images):
            log.warning("%d image(s) of %s have no thumbnail to embed: left out of the image "
                        "index", len(update.images) - len(rows), update.source_id)
        try:
            vectors = (self.embedder.encode_images([i.thumbnail for i in rows if i.thumbnail])
                       if rows else np.zeros((0, self._faiss().dim), np.float32))
        except Exception as exc:
            log.error("cannot embed the images of %s (%s: %s): findable by their caption and "
                      "OCR text only", update.source_id, type(exc).__name__, exc)
            rows, vectors = [], np.zeros((0, self._faiss().dim), np.float32)
        return dataclasses.replace(update, images=tuple(rows), vectors=vectors,
                                   model=self.embedder.name)

    def _compatible(self, update: ImageUpdate) -> bool:
        if update.op == "delete" or not update.images:
            return True
        dim = self._faiss().dim
        if update.vectors.shape[1] != dim:
            log.error("skipping the images of %s: %d-d vectors from %r, this index holds %d-d "
                      "ones from %r (use the same CLIP model on workers and replicas)",
                      update.source_id, update.vectors.shape[1], update.model, dim,
                      self.embedder.name)
            return False
        if update.model and update.model != self.embedder.name and (
                update.model not in self._warned_models):
            self._warned_models.add(update.model)
            log.warning("image vectors made by %r are applied to an index queried with %r",
                        update.model, self.embedder.name)
        return True

    def _write(self, final: dict[str, ImageUpdate | None]) -> int:
        store, index = self._store(), self._faiss()
        removed: list[int] = []
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        with self._write_lock:
            with store.transaction() as db:
                for source, update in final.items():
                    keep = [i.image_id for i in update.images] if update else []
                    removed += store.remove_images(db, source_id=source, keep=keep)
                    if update is not None and update.images:
                        rows = [dataclasses.asdict(i) for i in update.images]
                        added_ids += store.upsert_images(db, rows, update.vectors)
                        added_vecs.append(update.vectors)
                if removed or added_ids:
                    _bump(store, db)
            # Still under the lock: a search sees the old images or the new ones.
            index.remove(removed)
            if added_ids:
                index.upsert(added_ids, np.concatenate(added_vecs))
        return len(removed)

    # -- reads --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._faiss())

    def thumbnail(self, image_id: str) -> bytes | None:
        """The image's JPEG thumbnail (at most THUMBNAIL_SIDE pixels a side), or None."""
        return self._store().image_thumbnail(image_id)

    def search_text(self, query: str, k: int = 5) -> list[ImageHit]:
        """Images that match a text (CLIP's shared space)."""
        if not query.strip():
            raise ValueError("query must not be empty")
        return self.search_vector(self.embedder.encode_texts([query])[0], k)

    def search_image(self, image: Image | bytes, k: int = 5) -> list[ImageHit]:
        """Images that look like ``image`` (PIL image or encoded bytes)."""
        return self.search_vector(self.embedder.encode_images([image])[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[ImageHit]:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        with self._write_lock:  # FAISS and the docstore agree inside the lock
            scores, ids = self._faiss().search(vector[None, :], k)
            if ids.size == 0:
                return []
            rows = self._store().images_by_rows([int(i) for i in ids[0] if i >= 0])
        hits = []
        for score, row_id in zip(scores[0], ids[0], strict=True):
            row = rows.get(int(row_id))
            if row is not None:
                hits.append(ImageHit(score=float(score), **row))
        return hits


def _bump(store: Docstore, db: Any) -> None:
    row = db.execute("SELECT value FROM state WHERE key=?", (_GENERATION_KEY,)).fetchone()
    store.set_state(db, _GENERATION_KEY, str(int(row[0]) + 1 if row else 1))
