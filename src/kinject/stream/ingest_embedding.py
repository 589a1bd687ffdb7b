"""The ingest worker's embedding stage: a batch of read records (``_Pending``) becomes one
SourceUpdate per record (main and Chinese-route vectors) and one image event per record with
images (CLIP vectors, or none without CLIP), encoded once. A record whose embedding fails is
dead-lettered alone. A mixin of
:class:`~kinject.stream.ingest_worker.IngestWorker`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kinject.index.changes import ExtraVectors, SourceUpdate
from kinject.index.embedders import Embedder
from kinject.index.image_index import ImageUpdate, image_rows
from kinject.stream.events import encode_image_update
from kinject.types import Chunk, ImageItem

if TYPE_CHECKING:
    from kinject.index.clip_embedder import ClipEmbedder

log = logging.getLogger(__name__)

Position = tuple[str, int, int]


@dataclass
class _Pending:
    msg: Any
    source_id: str
    op: str
    chunks: list[Chunk]
    position: tuple[str, int, int]
    digest: str | None
    images: list[ImageItem] | None = None
    ts: float | None = None  # the record's timestamp: the newer of conflicting rows wins


class IngestEmbedding:
    """Embed what the worker has read (its embedders and dead-letter topic are the worker's)."""

    embedder: Embedder
    zh_embedder: Embedder | None
    clip: ClipEmbedder | None
    _max_event_bytes: int

    if TYPE_CHECKING:
        def _dead_letter(self, msg: Any, reason: str, stage: str, error_type: str,
                         *, keep_value: bool = True) -> None: ...

    def _embed(self, pending: list[_Pending]) -> list[SourceUpdate]:
        texts = [c.text for p in pending for c in p.chunks]
        try:
            vectors = self.embedder.encode(texts) if texts else np.zeros((0, 0), np.float32)
            extras = self._embed_zh(pending)
        except Exception as exc:
            if len(pending) == 1:
                self._dead_letter(
                    pending[0].msg, f"embedding failed: {exc}", "embed", type(exc).__name__
                )
                return []
            # Find the record that breaks the batch: embed each one on its own.
            return [u for p in pending for u in self._embed([p])]
        updates, start = [], 0
        for p in pending:
            n = len(p.chunks)
            updates.append(
                SourceUpdate(
                    op=p.op,
                    source_id=p.source_id,
                    chunks=tuple(p.chunks),
                    vectors=vectors[start : start + n] if n else np.zeros((0, 0), np.float32),
                    content_hash=p.digest,
                    record_position=p.position,
                    embedder=self.embedder.name,
                    extra=extras.get(id(p), ()),
                    ts=p.ts,
                )
            )
            start += n
        return updates

    def _embed_images(self, pending: list[_Pending]
                      ) -> tuple[list[_Pending], dict[Position, bytes]]:
        """CLIP vectors for the images of ``pending`` in one batch: the records to send on,
        and per record with images its encoded image event, by the record's position.

        A record whose images cannot be embedded goes to the dead-letter topic whole (before
        its text is sent), so nothing of it is half indexed.
        """
        with_images = [p for p in pending if p.images]
        if not with_images:
            return pending, {}
        if self.clip is None:
            return pending, self._unembedded_images(with_images)
        try:
            vectors = self.clip.encode_images([i.data for p in with_images
                                               for i in p.images or ()])
        except Exception as exc:
            if len(with_images) == 1:
                p = with_images[0]
                self._dead_letter(p.msg, f"image embedding failed: {exc}", "embed",
                                  type(exc).__name__)
                return [q for q in pending if q is not p], {}
            kept: list[_Pending] = [p for p in pending if not p.images]
            events: dict[Position, bytes] = {}
            for p in with_images:  # find the record that breaks the batch
                ok, evs = self._embed_images([p])
                kept += ok
                events.update(evs)
            order = {id(p): n for n, p in enumerate(pending)}
            return sorted(kept, key=lambda p: order[id(p)]), events
        events, start = {}, 0
        for p in with_images:
            images = p.images or []
            events[p.position] = encode_image_update(ImageUpdate(
                p.source_id, tuple(image_rows(images)), vectors[start:start + len(images)],
                model=self.clip.name, record_position=p.position))
            start += len(images)
        return pending, events

    def _unembedded_images(self, with_images: list[_Pending]) -> dict[Position, bytes]:
        """Without CLIP here: each record's images as an update without vectors, carrying
        their captions, OCR text and thumbnails, so that a replica with CLIP embeds them from
        the thumbnails (replicas without CLIP skip it, and embed it once given CLIP: they
        re-read kinject.chunks). One too large to publish is left out, not the record: its
        images stay findable by their caption and OCR chunks, as without CLIP anywhere."""
        events = {}
        for p in with_images:
            images = p.images or []
            value = encode_image_update(ImageUpdate(
                p.source_id, tuple(image_rows(images)), np.zeros((len(images), 0), np.float32),
                record_position=p.position))
            if len(value) > self._max_event_bytes:
                log.warning("the %d image(s) of %s are too many to publish without vectors: "
                            "findable by their caption and OCR text only", len(images),
                            p.source_id)
                continue
            events[p.position] = value
        return events

    def _embed_zh(self, pending: list[_Pending]) -> dict[int, tuple[ExtraVectors, ...]]:
        """Multilingual vectors of the batch's Chinese and mixed chunks, in one call; only
        those chunks pay for the second model."""
        zh = self.zh_embedder
        if zh is None:
            return {}
        where = [(p, i) for p in pending for i, c in enumerate(p.chunks)
                 if c.lang in ("zh", "mixed")]
        vectors = zh.encode([p.chunks[i].text for p, i in where]) if where else None
        out: dict[int, tuple[ExtraVectors, ...]] = {}
        for p in pending:
            rows = [n for n, (q, _) in enumerate(where) if q is p]
            if vectors is not None and rows:
                out[id(p)] = (ExtraVectors(space="zh", embedder=zh.name,
                                           positions=tuple(where[n][1] for n in rows),
                                           vectors=vectors[rows]),)
        return out
