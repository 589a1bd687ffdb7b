"""Audio on the road: a recording published on Kafka is transcribed by the ingest worker (in
its child process), reaches a replica's index and is found with the time it was said; a
broken recording is dead-lettered with its reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _running import Running
from _speech import encode, join_wavs, needs_espeak, silence_wav, speak
from _wait import until
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.audio import AudioConfig
from kinject.ingest.envelope import encode_record
from kinject.ingest.pipeline import IngestConfig
from kinject.stream.clients import make_producer
from kinject.stream.dlq import read_dead_letters
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OPENING = "Welcome everyone. Today we talk about the new bicycle lanes in the city centre."
LATER = "The harbour ferry will stop running on Sundays during the winter."


@pytest.fixture()
def road(kafka: KafkaSettings, tmp_path: Path, hash_embedder: HashEmbedder
         ) -> Iterator[dict[str, Any]]:
    bootstrap = kafka.bootstrap_servers or ""
    index = TextIndex(tmp_path / "replica", hash_embedder).open()
    config = IngestConfig(chunk_size=100, chunk_overlap=10, ocr_engine="none",
                          # Whisper base from the suite's shared models cache, where it is
                          # assembled from its packages once
                          audio=AudioConfig(models_dir=Path(os.environ["KINJECT_MODELS__CACHE_DIR"])))
    worker = IngestWorker(kafka, bootstrap, config, hash_embedder,
                          group_id=f"{kafka.topic_prefix}-ingest", record_timeout_s=120.0)
    mat = IndexMaterialiser(kafka, bootstrap, index)
    loops = Running(worker.run, mat.run)
    until(worker.ready.is_set)
    producer = make_producer(kafka, bootstrap)

    def publish(*records: Record) -> None:
        for r in records:
            producer.send(Topics.from_settings(kafka).records, key=r.source_id.encode(),
                          value=encode_record(r))
        producer.flush()

    yield {"index": index, "publish": publish, "worker": worker}
    loops.stop()
    producer.close()
    index.close()


@needs_espeak
def test_a_published_recording_is_found_with_the_time_it_was_said(
        road: dict[str, Any], kafka: KafkaSettings) -> None:
    talk = encode(join_wavs(speak(OPENING), silence_wav(3.0), speak(LATER)), "mp3")
    flac = encode(speak(OPENING), "flac")
    # no kind: sniffed from the bytes; and a FLAC cut short, which no one can read
    road["publish"](Record("meetings/transport.mp3", content=talk),
                    Record("meetings/cut.flac", content=flac[: len(flac) // 3]))
    index: TextIndex = road["index"]
    until(lambda: any("ferry" in h.text.lower() for h in index.search("harbour ferry Sundays",
                                                                      k=5)),
          timeout_s=240)
    hits = [h for h in index.search("harbour ferry Sundays", k=5)
            if h.source_id == "meetings/transport.mp3"]
    ferry = next(h for h in hits if "ferry" in h.text.lower())
    lanes = next(h for h in index.search("bicycle lanes city centre", k=5)
                 if "bicycle" in h.text.lower())
    # each chunk says where in the recording it was said: the ferry after the opening
    assert 0 <= lanes.meta["start_s"] < lanes.meta["end_s"] <= ferry.meta["start_s"]
    assert ferry.meta["end_s"] <= ferry.meta["duration_s"] + 0.5
    assert ferry.meta["language"] == "en"

    until(lambda: road["worker"].dead_letters == 1, timeout_s=60)
    letters = read_dead_letters(kafka, kafka.bootstrap_servers or "")
    assert [(d.source_id, d.stage) for d in letters] == [("meetings/cut.flac", "transcribe")]
    assert "cut short" in letters[0].reason


MANDARIN = Path(__file__).parents[1] / "ingest" / "data" / "mandarin-greeting.flac"


def test_mandarin_speech_is_found_by_a_question_in_simplified_characters(
        road: dict[str, Any]) -> None:
    # a real recording (tests/ingest/data/README.md), which Whisper base writes in Traditional
    # characters (天氣, 音樂, 書), beside a Chinese page in Simplified ones
    road["publish"](Record("meetings/greeting.flac", content=MANDARIN.read_bytes()),
                    Record("notes/bikes.txt",
                           content="今天的会议讨论了市中心新的自行车道。".encode()))
    index: TextIndex = road["index"]
    until(lambda: {h.source_id for h in index.search("自行车道", k=5)}
          >= {"meetings/greeting.flac", "notes/bikes.txt"}, timeout_s=240)
    for question in ("最近看过什么好书？", "我们聊了天气和音乐吗？"):
        hit = index.search(question, k=1, mode="bm25")[0]
        assert hit.source_id == "meetings/greeting.flac", (question, hit.text)
        assert hit.meta["language"] == "zh"
        assert 0 <= hit.meta["start_s"] < hit.meta["end_s"] <= hit.meta["duration_s"] + 0.5
