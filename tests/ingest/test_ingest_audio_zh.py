"""Mandarin speech becomes Chinese text with the language detected as "zh": a real recording
(tests/ingest/data/README.md says where it comes from), since espeak-ng's Mandarin is not
intelligible to Whisper and no pip wheel ships a Chinese voice for a synthesiser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opencc import OpenCC

from _speech import character_error_rate
from kinject.ingest.audio import AudioConfig
from kinject.ingest.envelope import decode_record, encode_record
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.ingest.sniff import sniff_kind
from kinject.types import Record

pytestmark = pytest.mark.slow

CLIP = Path(__file__).parent / "data" / "mandarin-greeting.flac"
SCRIPT = "你好，很高兴认识你。今天我们来聊一聊天气、音乐，还有最近看过的好书。"
CLIP_S = 7.0
MAX_CER = 0.2


def test_mandarin_speech_becomes_its_chinese_script_with_language_zh() -> None:
    data = CLIP.read_bytes()
    assert sniff_kind(data) == "audio"
    # no kind, as a producer that leaves it to kinject sends it, through the envelope
    record = decode_record(encode_record(Record("meetings/greeting.flac", content=data)), None)
    # the multilingual default (Whisper base), from the suite's shared models cache, where it
    # is assembled from its packages once
    models_dir = Path(os.environ["KINJECT_MODELS__CACHE_DIR"])
    config = IngestConfig(chunk_size=120, chunk_overlap=10, ocr_engine="none",
                          audio=AudioConfig(models_dir=models_dir))
    got = ingest_record(record, config)

    transcript = "".join(c.text for c in got.chunks)
    # Whisper base writes this Mandarin in Traditional characters (天氣, 音樂, 書): the
    # script's Simplified characters are compared after folding the transcript with OpenCC
    simplified = OpenCC("t2s").convert(transcript)
    assert character_error_rate(SCRIPT, simplified) <= MAX_CER, transcript
    assert all(c.kind == "audio" and c.meta["language"] == "zh" for c in got.chunks)
    assert {d.lang for d in got.documents} == {"zh"}
    # each chunk says where in the recording it was said
    duration = got.chunks[0].meta["duration_s"]
    assert duration == pytest.approx(CLIP_S, abs=0.1)
    spans = [(c.meta["start_s"], c.meta["end_s"]) for c in got.chunks]
    assert spans == sorted(spans) and all(0 <= s < e <= duration + 0.5 for s, e in spans)
