"""The length cap of audio whose container gives no duration (a FLAC written to a pipe: its
STREAMINFO counts no samples): it applies while decoding, not after."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kinject.errors import BadRecord
from kinject.ingest.audio import AudioConfig
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record

RATE = 16_000


def _flac_without_duration(seconds: float) -> bytes:
    """A FLAC of a quiet tone whose STREAMINFO says the sample count is unknown (0)."""
    import av

    tone = (np.sin(np.arange(int(seconds * RATE)) / 10) * 300).astype(np.int16)
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as dst:
        stream = dst.add_stream("flac", rate=RATE, layout="mono")
        for start in range(0, len(tone), RATE * 10):
            frame = av.AudioFrame.from_ndarray(tone[start:start + RATE * 10].reshape(1, -1),
                                               format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    data = bytearray(out.getvalue())
    info = data.index(b"fLaC") + 8  # STREAMINFO, after its block header
    data[info + 13] &= 0xF0  # total samples: the 36 bits from byte 13's low half
    data[info + 14:info + 18] = bytes(4)
    with av.open(io.BytesIO(bytes(data))) as container:
        assert container.duration is None  # nothing to check before decoding
    return bytes(data)


def test_a_recording_without_a_duration_is_stopped_at_the_cap_not_decoded_whole(
        tmp_path: Path) -> None:
    """Ten minutes of audio against a cap of three seconds: the whole recording was decoded
    into memory (about 60 MB here; a long stream exhausts the worker's memory) before the
    cap refused it. Now decoding stops at the cap, and the record is refused the same way
    (dead-lettered with the reason)."""
    data = _flac_without_duration(600.0)
    config = IngestConfig(chunk_size=120, chunk_overlap=10, ocr_engine="none",
                          audio=AudioConfig(models_dir=tmp_path, max_seconds=3.0))
    tracemalloc.start()
    try:
        with pytest.raises(BadRecord, match="over the cap of 3 s.*AUDIO_MAX_SECONDS") as info:
            ingest_record(Record("streams/long.flac", content=data), config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.stage == "parse"
    # 600 s at 16 kHz is 19 MB as int16 and 38 MB as float32; three seconds are 0.1 MB.
    assert peak < 8_000_000, f"decoding held {peak:,} bytes"
