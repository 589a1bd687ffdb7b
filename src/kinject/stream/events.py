"""Wire formats of kinject.chunks and kinject.dlq messages (JSON, vectors as base64 float32)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import numpy as np

from kinject.index.changes import ExtraVectors, SourceUpdate
from kinject.index.image_index import ImageRow, ImageUpdate
from kinject.types import Chunk


def encode_update(update: SourceUpdate) -> bytes:
    vecs = np.ascontiguousarray(update.vectors, dtype=np.float32)
    body: dict[str, Any] = {
        # v2 adds "extra" (vectors in other spaces); without them the event stays v1, so
        # replicas of the previous version read it.
        "v": 2 if update.extra else 1,
        "op": update.op,
        "source_id": update.source_id,
        "content_hash": update.content_hash,
        "record_position": list(update.record_position) if update.record_position else None,
        "embedder": update.embedder,
        "ts": update.ts,
        "dim": int(vecs.shape[1]) if vecs.ndim == 2 and len(vecs) else 0,
        "vectors_b64": base64.b64encode(vecs.tobytes()).decode("ascii") if len(vecs) else "",
        "chunks": [
            {
                "chunk_id": c.chunk_id,
                "doc_id": c.doc_id,
                "text": c.text,
                "ordinal": c.ordinal,
                "lang": c.lang,
                "kind": c.kind,
                "meta": c.meta,
            }
            for c in update.chunks
        ],
    }
    if update.extra:
        body["extra"] = [_encode_extra(x) for x in update.extra]
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


def decode_update(value: bytes) -> SourceUpdate:
    body = json.loads(value)
    if body.get("v") not in (1, 2):
        raise ValueError(f"unknown chunk event version {body.get('v')!r}")
    source_id = body["source_id"]
    chunks = tuple(
        Chunk(
            chunk_id=c["chunk_id"],
            doc_id=c["doc_id"],
            source_id=source_id,
            text=c["text"],
            ordinal=c["ordinal"],
            lang=c["lang"],
            kind=c["kind"],
            meta=c.get("meta") or {},
        )
        for c in body["chunks"]
    )
    dim = int(body["dim"])
    raw = base64.b64decode(body["vectors_b64"]) if body["vectors_b64"] else b""
    vectors = (
        np.frombuffer(raw, dtype=np.float32).reshape(-1, dim).copy()
        if dim
        else np.zeros((0, 0), np.float32)
    )
    pos = body.get("record_position")
    return SourceUpdate(
        op=body["op"],
        source_id=source_id,
        chunks=chunks,
        vectors=vectors,
        content_hash=body.get("content_hash"),
        record_position=(pos[0], int(pos[1]), int(pos[2])) if pos else None,
        embedder=body.get("embedder", ""),
        extra=tuple(_decode_extra(x) for x in body.get("extra") or ()),
        ts=float(body["ts"]) if body.get("ts") is not None else None,
    )


# -- image events (the CLIP index): on kinject.chunks beside the chunk events ---------------
# An image event carries each image's CLIP vector, caption, OCR text, metadata and a small
# JPEG thumbnail, not the original bytes: messages stay a few KB whatever the image size, a
# replica needs nothing more to search and show it, and the original stays at its source.
# A worker without CLIP publishes it without vectors (dim 0): a replica with CLIP embeds the
# thumbnails (ImageIndex.apply), one without skips it until it is given CLIP.
# Its JSON starts with IMAGE_EVENT_PREFIX, so a reader routes it without parsing it twice.
IMAGE_EVENT_PREFIX = b'{"event": "images"'


def is_image_event(value: bytes | None) -> bool:
    return value is not None and value.startswith(IMAGE_EVENT_PREFIX)


def encode_image_update(update: ImageUpdate) -> bytes:
    vecs = np.ascontiguousarray(update.vectors, dtype=np.float32)
    body: dict[str, Any] = {
        "event": "images",
        "v": 1,
        "op": update.op,
        "source_id": update.source_id,
        "model": update.model,
        "record_position": list(update.record_position) if update.record_position else None,
        "dim": int(vecs.shape[1]) if vecs.ndim == 2 and len(vecs) else 0,
        "vectors_b64": base64.b64encode(vecs.tobytes()).decode("ascii") if len(vecs) else "",
        "images": [
            {
                "image_id": i.image_id,
                "caption": i.caption,
                "ocr_text": i.ocr_text,
                "meta": i.meta,
                "thumbnail_b64": base64.b64encode(i.thumbnail).decode("ascii")
                if i.thumbnail else None,
            }
            for i in update.images
        ],
    }
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


def decode_image_update(value: bytes) -> ImageUpdate:
    body = json.loads(value)
    if body.get("event") != "images" or body.get("v") != 1:
        raise ValueError(f"not a v1 image event: {body.get('event')!r} v{body.get('v')!r}")
    source_id = body["source_id"]
    images = tuple(
        ImageRow(
            image_id=i["image_id"],
            source_id=source_id,
            caption=i.get("caption") or "",
            ocr_text=i.get("ocr_text") or "",
            meta=i.get("meta") or {},
            thumbnail=base64.b64decode(i["thumbnail_b64"]) if i.get("thumbnail_b64") else None,
        )
        for i in body["images"]
    )
    dim = int(body["dim"])
    raw = base64.b64decode(body["vectors_b64"]) if body["vectors_b64"] else b""
    # dim 0 with images: published without vectors (a worker without CLIP); a replica
    # with CLIP embeds them from their thumbnails
    vectors = (np.frombuffer(raw, dtype=np.float32).reshape(-1, dim).copy() if dim
               else np.zeros((len(images), 0), np.float32))
    pos = body.get("record_position")
    return ImageUpdate(
        source_id=source_id,
        images=images,
        vectors=vectors,
        op=body["op"],
        model=body.get("model", ""),
        record_position=(pos[0], int(pos[1]), int(pos[2])) if pos else None,
    )


def _encode_extra(extra: ExtraVectors) -> dict[str, Any]:
    vecs = np.ascontiguousarray(extra.vectors, dtype=np.float32)
    return {
        "space": extra.space,
        "embedder": extra.embedder,
        "positions": list(extra.positions),
        "dim": int(vecs.shape[1]) if vecs.ndim == 2 and len(vecs) else 0,
        "vectors_b64": base64.b64encode(vecs.tobytes()).decode("ascii") if len(vecs) else "",
    }


def _decode_extra(body: dict[str, Any]) -> ExtraVectors:
    dim = int(body["dim"])
    raw = base64.b64decode(body["vectors_b64"]) if body["vectors_b64"] else b""
    vectors = (np.frombuffer(raw, dtype=np.float32).reshape(-1, dim).copy() if dim
               else np.zeros((0, 0), np.float32))
    return ExtraVectors(space=str(body["space"]), embedder=str(body["embedder"]),
                        positions=tuple(int(i) for i in body["positions"]), vectors=vectors)


def encode_dead_letter(
    *,
    reason: str,
    stage: str,
    error_type: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    cluster_id: str | None = None,
    digest: str | None = None,
) -> bytes:
    """A dead letter keeps the original bytes, so an operator can inspect and replay it;
    the cluster and the bytes' digest let a store recognise a letter it already holds."""
    body = {
        "reason": reason,
        "stage": stage,
        "error_type": error_type,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key_b64": base64.b64encode(key).decode("ascii") if key is not None else None,
        "value_b64": base64.b64encode(value).decode("ascii") if value is not None else None,
        "at": time.time(),
        "cluster_id": cluster_id,
        "digest": digest,
    }
    return json.dumps(body).encode("utf-8")
