"""The ingest worker's image events without CLIP: encoded once, dropped alone when too large."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

import kinject.stream.ingest_embedding as ingest_embedding
from kinject.stream.events import decode_image_update
from kinject.stream.ingest_embedding import IngestEmbedding, _Pending
from kinject.types import ImageItem


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="PNG")
    return out.getvalue()


class _Worker(IngestEmbedding):
    def __init__(self, max_event_bytes: int) -> None:
        self.clip = None
        self._max_event_bytes = max_event_bytes


def _pending(n: int, source_id: str) -> _Pending:
    images = [ImageItem(f"{source_id}#{i}", source_id, _png((40 * i, 90, 200)),
                        caption=f"pier {i}") for i in range(n)]
    return _Pending(msg=None, source_id=source_id, op="upsert", chunks=[],
                    position=("records", 0, n), digest=None, images=images)


def test_without_clip_each_record_s_image_event_is_encoded_once_and_sent_as_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[str] = []
    real = ingest_embedding.encode_image_update

    def counting(update):  # type: ignore[no-untyped-def]
        encoded.append(update.source_id)
        return real(update)

    monkeypatch.setattr(ingest_embedding, "encode_image_update", counting)
    pending = [_pending(1, "pics/a"), _pending(2, "pics/b")]
    kept, events = _Worker(max_event_bytes=10**7)._embed_images(pending)
    assert kept == pending
    assert encoded == ["pics/a", "pics/b"]  # once each: the size check reads the sent bytes
    updates = {pos: decode_image_update(value) for pos, value in events.items()}
    assert {pos: u.source_id for pos, u in updates.items()} == {
        ("records", 0, 1): "pics/a", ("records", 0, 2): "pics/b"}
    assert all(u.vectors.shape[1] == 0 and all(i.thumbnail for i in u.images)
               for u in updates.values())


def test_without_clip_an_image_event_too_large_is_left_out_and_the_record_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small, big = _pending(1, "pics/small"), _pending(3, "pics/big")
    size = len(_Worker(10**7)._embed_images([small])[1][small.position])
    with caplog.at_level(logging.WARNING):
        kept, events = _Worker(max_event_bytes=size + 10)._embed_images([small, big])
    assert kept == [small, big] and list(events) == [small.position]
    assert "the 3 image(s) of pics/big are too many" in caplog.text
