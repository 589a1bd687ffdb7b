"""Wire formats of kinject.chunks and kinject.dlq messages (JSON, vectors as base64 float32)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import numpy as np

from kinject.index.changes import SourceUpdate
from kinject.types import Chunk


def encode_update(update: SourceUpdate) -> bytes:
    vecs = np.ascontiguousarray(update.vectors, dtype=np.float32)
    body: dict[str, Any] = {
        "v": 1,
        "op": update.op,
        "source_id": update.source_id,
        "content_hash": update.content_hash,
        "record_position": list(update.record_position) if update.record_position else None,
        "embedder": update.embedder,
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
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


def decode_update(value: bytes) -> SourceUpdate:
    body = json.loads(value)
    if body.get("v") != 1:
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
    )


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
) -> bytes:
    """A dead letter keeps the original bytes, so an operator can inspect and replay it."""
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
    }
    return json.dumps(body).encode("utf-8")
