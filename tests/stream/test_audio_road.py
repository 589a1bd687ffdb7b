"""Audio on the road: a recording published on Kafka is transcribed by the ingest worker (in
its child process), reaches a replica's index and is found with the time it was said; a
broken recording is dead-lettered with its reason."""

from __future__ import annotations

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

pytestmark = [pytest.mark.kafka, pytest.mark.slow, needs_espeak]

OPENING = "Welcome everyone. Today we talk about the new bicycle lanes in the city centre."
LATER = "The harbour ferry will stop running on Sundays during the winter."


@pytest.fixture()
def road(kafka: KafkaSettings, tmp_path: Path, hash_embedder: HashEmbedder
         ) -> Iterator[dict[str, Any]]:
    bootstrap = kafka.bootstrap_servers or ""
    index = TextIndex(tmp_path / "replica", hash_embedder).open()
    config = IngestConfig(chunk_size=100, chunk_overlap=10, ocr_engine="none",
                          audio=AudioConfig(models_dir=tmp_path / "models"))
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
